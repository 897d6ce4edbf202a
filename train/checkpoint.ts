import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../compiler/tensor.ts";
import type { ParamSource } from "../io/checkpoints/param-source.ts";
import { storedParams } from "../io/checkpoints/load.ts";
import { UserError } from "../grammar/diagnostics.ts";
import { recoverDirAtomic, writeDirAtomic } from "../io/atomic.ts";
import { openSafetensors, type SafetensorsReader, writeSafetensors } from "../io/safetensors.ts";

/**
 * A stage's directory holds its finished result: `final.safetensors` (every model
 * parameter: what later stages and `dehvf eval` load), `eval.json`, `loss.png` and
 * `metrics.jsonl`. A run in progress works in `work/`: its live `metrics.jsonl` and
 * `checkpoint/` (trainable weights + AdamW state + step, replaced atomically as a whole);
 * its result is written there and moved into place only once complete (train/stage-result.ts).
 */
export const STAGE_FILES = {
  work: "work",
  checkpoint: "checkpoint",
  state: "state.safetensors",
  final: "final.safetensors",
  metrics: "metrics.jsonl",
  plot: "loss.png",
  eval: "eval.json",
} as const;

/** Metadata key of the digest of a file's tensors, written with every file and checked on every read. */
const WEIGHTS_KEY = "weights_sha256";

export interface Saved {
  readonly tensors: Map<string, Tensor>;
  readonly meta: Record<string, string>;
}

/** A tensor a file must hold. */
export interface ExpectedTensor {
  readonly name: string;
  readonly shape: readonly number[];
}

/** A file written by dehvf that cannot be trusted: what, where, why. */
export class CheckpointError extends UserError {
  constructor(file: string, reason: string, tensor?: string) {
    super(`${file}${tensor === undefined ? "" : `: tensor "${tensor}"`}: ${reason}`);
  }
}

/** Digest of tensors as stored (f32), independent of their order in the file. */
export function weightsDigest(tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>): string {
  const h = createHash("sha256");
  for (const name of [...tensors.keys()].sort()) {
    const t = tensors.get(name)!;
    h.update(`${name}[${t.shape.join(",")}]`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest("hex");
}

/** Writes tensors as F32 with their digest in the metadata; returns the digest. */
export async function saveTensors(file: string, tensors: ReadonlyMap<string, Tensor>, meta: Record<string, string>): Promise<string> {
  const f32 = new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data) }]));
  const digest = weightsDigest(f32);
  await writeSafetensors(file, f32, { ...meta, [WEIGHTS_KEY]: digest });
  return digest;
}

async function withReader<T>(file: string, use: (r: SafetensorsReader) => Promise<T>): Promise<T> {
  const r = await openSafetensors(file);
  try {
    return await use(r);
  } finally {
    await r.close();
  }
}

export interface ReadOptions {
  /** tensors the file must hold, with exactly these shapes */
  readonly expected?: readonly ExpectedTensor[];
  /** refuse tensors that are not expected (a checkpoint must be exactly one model's state) */
  readonly exact?: boolean;
  /** read only these names (a backbone gives a later stage only what it uses) */
  readonly only?: (name: string) => boolean;
  /** accept F16/BF16 for expected tensors (weights from elsewhere); dehvf's own files are F32 */
  readonly anyFloat?: boolean;
  /** "report": return non-finite values instead of refusing the file (eval warns about them) */
  readonly nonFinite?: "refuse" | "report";
}

export interface Checked extends Saved {
  /** tensors holding NaN or ±Infinity (only with nonFinite: "report") */
  readonly nonFinite: readonly { readonly name: string; readonly count: number; readonly size: number }[];
}

function countNonFinite(data: Float32Array): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) n++;
  return n;
}

/**
 * Reads a file dehvf wrote, trusting nothing: the header's names, dtypes and shapes are
 * checked before any data is read, then every value must be finite and, where the file
 * records one, the digest of its tensors must match.
 */
export async function readChecked(file: string, opts: ReadOptions = {}): Promise<Checked> {
  return withReader(file, async (r) => {
    const expected = opts.expected ?? [];
    const missing = expected.filter((e) => !r.has(e.name)).map((e) => e.name);
    if (missing.length === 1) throw new CheckpointError(file, "missing (the file holds no such tensor)", missing[0]);
    if (missing.length)
      throw new CheckpointError(
        file,
        `lacks ${missing.length} of the ${expected.length} tensors this model needs (e.g. ${missing.slice(0, 3).join(", ")}); was it written for another model?`,
      );
    for (const e of expected) {
      const info = r.info(e.name);
      const float = info.dtype === "F32" || (opts.anyFloat && (info.dtype === "F16" || info.dtype === "BF16"));
      if (!float)
        throw new CheckpointError(file, `stored as ${info.dtype}; ${opts.anyFloat ? "weights must be F32, F16 or BF16" : "dehvf writes F32"}`, e.name);
      if (info.shape.join(",") !== e.shape.join(","))
        throw new CheckpointError(file, `has shape [${info.shape.join(", ")}], expected [${e.shape.join(", ")}]`, e.name);
    }
    if (opts.exact) {
      const want = new Set(expected.map((e) => e.name));
      const extra = r.names().find((n) => !want.has(n));
      if (extra !== undefined) throw new CheckpointError(file, "not part of this model's state (was the file written for another model?)", extra);
    }
    const names = r.names().filter((n) => !opts.only || opts.only(n));
    const f32 = new Map<string, { shape: readonly number[]; data: Float32Array }>();
    const nonFinite: { name: string; count: number; size: number }[] = [];
    for (const name of names) {
      const info = r.info(name);
      if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16")
        throw new CheckpointError(file, `stored as ${info.dtype}, not a float type`, name);
      const data = await r.readF32(name);
      const bad = countNonFinite(data);
      if (bad && opts.nonFinite !== "report")
        throw new CheckpointError(file, `${bad} of its ${data.length} values are NaN or infinite: the weights are not finite`, name);
      if (bad) nonFinite.push({ name, count: bad, size: data.length });
      f32.set(name, { shape: info.shape, data });
    }
    const recorded = r.metadata[WEIGHTS_KEY];
    if (recorded !== undefined && names.length === r.names().length && weightsDigest(f32) !== recorded)
      throw new CheckpointError(file, "its tensors do not match the digest recorded when it was written: the file was changed or damaged");
    const tensors = new Map([...f32].map(([k, t]) => [k, { shape: [...t.shape], data: Float64Array.from(t.data) }]));
    return { tensors, meta: { ...r.metadata }, nonFinite };
  });
}

/** A file's metadata only (the header; no tensor bytes are read). */
export async function loadMeta(file: string): Promise<Record<string, string>> {
  return withReader(file, async (r) => ({ ...r.metadata }));
}

/** The digest recorded in a file's metadata (trusted only after readChecked has compared it). */
export function recordedDigest(meta: Readonly<Record<string, string>>): string | undefined {
  return meta[WEIGHTS_KEY];
}

/** A step number read back: a whole number in [0, max]. */
export function checkedStep(file: string, text: string | undefined, max: number): number {
  const n = text !== undefined && /^\d{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 0 && n <= max)) throw new CheckpointError(file, `records step ${JSON.stringify(text ?? null)}, which is not a whole number in [0, ${max}]`);
  return n;
}

/** Writes the resumable state: a kill at any moment leaves the previous checkpoint or this one, whole. */
export async function saveCheckpoint(workDir: string, tensors: ReadonlyMap<string, Tensor>, meta: Record<string, string>): Promise<void> {
  await writeDirAtomic(join(workDir, STAGE_FILES.checkpoint), (tmp) => saveTensors(join(tmp, STAGE_FILES.state), tensors, meta).then(() => undefined));
}

/** The checkpoint's state file, after undoing a swap a kill interrupted; undefined when there is none. */
export async function checkpointFile(workDir: string): Promise<string | undefined> {
  const dir = join(workDir, STAGE_FILES.checkpoint);
  if ((await recoverDirAtomic(dir)) === "missing" || !existsSync(join(dir, STAGE_FILES.state))) return undefined;
  return join(dir, STAGE_FILES.state);
}

/**
 * Trained weights for `model` from a stage directory of `dehvf train` (its
 * final.safetensors) or a .safetensors file: every parameter present with its shape,
 * finite, matching its digest.
 */
export async function loadTrainedWeights(
  path: string,
  model: { readonly params: readonly (ExpectedTensor & { readonly source?: ParamSource; readonly trainable: boolean })[] },
): Promise<Map<string, Tensor>> {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, STAGE_FILES.final) : path;
  if (!existsSync(file)) throw new UserError(`no weights at ${file} (a stage directory of \`dehvf train\` holds ${STAGE_FILES.final})`);
  // frozen checkpoint weights (`from "..."`) are not stored with a result: they come from their checkpoint
  return (await readChecked(file, { expected: storedParams(model.params), anyFloat: true })).tensors;
}
