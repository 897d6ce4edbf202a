import { createHash } from "node:crypto";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import { contentDigest } from "../io/file-digest.ts";
import { attrsKey, type Node } from "../compiler/ir.ts";
import type { StageConfig } from "./stages.ts";

/**
 * What a stage's result was made from, by content: the train section, the model graph,
 * the data (tokenizer included) and each backbone's own identity and final weights. No
 * path enters it, so copying or moving `--out` keeps a finished stage valid. Stored with
 * the result and compared part by part, so a retrain can say why.
 */
export interface StageIdentity {
  readonly stage: string;
  readonly model: string;
  /** the train section's settings (after --steps) */
  readonly config: Readonly<Record<string, unknown>>;
  /** structural digest of the model's graph (ops, constants, shapes, parameter names, init rules, trainable marks) */
  readonly graph: string;
  /** digest of the dataset's files and decoded images */
  readonly data: string;
  /** digest of the pretrained checkpoints the model reads (`from "..."`) and which tensor each parameter takes */
  readonly checkpoints: string;
  /** per backbone stage: its key and the digest of its final weights */
  readonly backbones: Readonly<Record<string, { readonly key: string; readonly weights: string }>>;
}

/**
 * Settings that only change the step size, not what the result means: a diverged run may
 * be resumed with a lower `lr`, more warm-up or tighter clipping; evaluation and
 * checkpoint cadence change nothing trained.
 */
const RESUMABLE_CHANGES = ["lr", "warmup", "clip", "evalEvery", "checkpointEvery"] as const;

/** The DSL names of StageConfig fields, for messages. */
const DSL_KEY: Record<string, string> = {
  weightDecay: "weight_decay",
  solutionGiven: "solution_given",
  evalEvery: "eval_every",
  checkpointEvery: "checkpoint_every",
};

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** A digest of the graph's structure that does not depend on node ids (only on what each node computes from what). */
export function graphDigest(model: CompiledModel): string {
  const digest = new Map<Node, string>();
  for (const n of topoOrder(model.outputs.map((o) => o.node)))
    digest.set(n, sha256(`${n.op}${attrsKey(n.attrs)}(${n.src.map((s) => digest.get(s)).join(",")})`));
  return sha256(
    JSON.stringify({ inputs: model.inputs.map((i) => [i.name, digest.get(i.node) ?? null]), outputs: model.outputs.map((o) => [o.name, digest.get(o.node)]) }),
  );
}

export function stageIdentity(
  cfg: StageConfig,
  model: CompiledModel,
  dataDigest: string,
  backbones: StageIdentity["backbones"],
  checkpoints = "none",
): StageIdentity {
  const { span: _span, ...config } = cfg;
  return { stage: cfg.name, model: model.name, config, graph: graphDigest(model), data: dataDigest, checkpoints, backbones };
}

/** What the model's `from "..."` checkpoints contribute: each file's content and the tensor each parameter reads from it. */
export async function checkpointsDigest(model: CompiledModel): Promise<string> {
  const files = new Map<string, string>();
  const lines: string[] = [];
  for (const p of model.params) {
    if (!p.source) continue;
    const file = p.source.file;
    if (!files.has(file)) files.set(file, await contentDigest(file));
    lines.push(`${p.name}<-${files.get(file)}:${p.source.tensor}:${JSON.stringify(p.source.transform ?? null)}`);
  }
  return lines.length ? sha256(lines.sort().join("\n")) : "none";
}

/** Keys are sorted so the same identity always serialises (and hashes) the same. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

/** The key a finished result is reused by: every part of the identity. */
export function identityKey(id: StageIdentity): string {
  return sha256(canonical(id)).slice(0, 32);
}

/** The key a checkpoint is resumed by: the identity less the settings a resume may change. */
export function resumeKey(id: StageIdentity): string {
  const config = Object.fromEntries(Object.entries(id.config).filter(([k]) => !(RESUMABLE_CHANGES as readonly string[]).includes(k)));
  return identityKey({ ...id, config });
}

export function encodeIdentity(id: StageIdentity): string {
  return canonical(id);
}

/** The identity stored with a result, or undefined when it is missing or not one (an older dehvf, a foreign file). */
export function decodeIdentity(text: string | undefined): StageIdentity | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as StageIdentity;
    const ok =
      v &&
      typeof v === "object" &&
      typeof v.stage === "string" &&
      typeof v.model === "string" &&
      typeof v.graph === "string" &&
      typeof v.data === "string" &&
      typeof v.checkpoints === "string" &&
      v.config &&
      typeof v.config === "object" &&
      v.backbones &&
      typeof v.backbones === "object";
    return ok ? v : undefined;
  } catch {
    return undefined;
  }
}

/** A setting as a person writes it: 6e17, not 600000000000000000. */
export function formatSetting(v: unknown): string {
  if (typeof v === "number" && v !== 0 && Number.isFinite(v) && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-4)) return v.toExponential().replace("e+", "e");
  return v === undefined ? "unset" : JSON.stringify(v);
}

/** Why `was` and `now` differ, in words, one line per part ("`lr` 0.002 → 0.003"). */
export function identityChanges(was: StageIdentity, now: StageIdentity, only?: "resume"): string[] {
  const out: string[] = [];
  if (was.model !== now.model) out.push(`the model is \`${now.model}\` (was \`${was.model}\`)`);
  for (const k of new Set([...Object.keys(was.config), ...Object.keys(now.config)])) {
    if (only === "resume" && (RESUMABLE_CHANGES as readonly string[]).includes(k)) continue;
    if (canonical(was.config[k]) !== canonical(now.config[k]))
      out.push(`\`${DSL_KEY[k] ?? k}\` ${formatSetting(was.config[k])} → ${formatSetting(now.config[k])}`);
  }
  if (was.graph !== now.graph) out.push("the model graph changed (an op, constant, shape, init rule or frozen mark in the model file or the std library)");
  if (was.data !== now.data) out.push("the data changed (dataset files, images or tokenizer)");
  if (was.checkpoints !== now.checkpoints) out.push('a pretrained checkpoint the model reads (`from "..."`) changed');
  for (const b of new Set([...Object.keys(was.backbones), ...Object.keys(now.backbones)])) {
    const [x, y] = [was.backbones[b], now.backbones[b]];
    if (!x || !y) out.push(`backbone stage \`${b}\` was ${x ? "removed" : "added"}`);
    else if (x.key !== y.key) out.push(`backbone stage \`${b}\` was trained differently since`);
    else if (x.weights !== y.weights) out.push(`backbone stage \`${b}\`'s final weights changed since`);
  }
  return out;
}
