import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import type { Manifest } from "./build.ts";
import type { CocoDataset, CocoImage } from "./captions.ts";
import type { Composite, Look, Quad } from "./composites.ts";
import { decodeImageInto } from "./images.ts";
import { defaultForm, type ImageForm } from "./preprocess.ts";
import { DEFAULT_PROMPT, promptFormat, type PromptFormat } from "./prompts.ts";
import { LETTERS, SPLITS, type PidSplits, type Problem, type Problems, type SplitName } from "./scienceqa.ts";
import { hfTokenizer } from "./tokenizers/hf.ts";
import { TOKENIZER_CONFIG, TOKENIZER_JSON } from "./tokenizers/load.ts";
import type { Tokenizer } from "./tokenizers/tokenizer.ts";
import { DataError } from "./data-error.ts";

export const FILES = {
  problems: "problems.json",
  splits: "pid_splits.json",
  captions: "dataset_coco.json",
  tokenizer: TOKENIZER_JSON,
  tokenizerConfig: TOKENIZER_CONFIG,
  grids: "grids.json",
  manifest: "manifest.json",
  images: "images",
} as const;

/**
 * Runs fn over items with at most `limit` in flight, results in input order. On a failure no new
 * item starts and it rejects only once the running ones settle, so nothing writes after the caller cleans up.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  const failure = settled.find((r) => r.status === "rejected");
  if (failure) throw failure.reason;
  return out;
}

export const DEFAULT_CONCURRENCY = 2 * availableParallelism();

export async function readJson<T>(path: string): Promise<T> {
  return (await readJsonText<T>(path)).value;
}

/** The parsed file and the text it came from (what a content digest covers). */
async function readJsonText<T>(path: string): Promise<{ value: T; text: string }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new DataError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return { value: JSON.parse(text) as T, text };
  } catch (e) {
    throw new DataError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

export async function readManifest(dir: string): Promise<Manifest | undefined> {
  const path = join(dir, FILES.manifest);
  return existsSync(path) ? readJson<Manifest>(path) : undefined;
}

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");

/** Every file as the model's image input ([n, C, H, W] row-major), through data/images.ts; a bad file is a DataError naming it. */
export async function decodeImages(paths: readonly string[], form: ImageForm, opts: { concurrency?: number } = {}): Promise<Float32Array> {
  const numel = form.shape[0] * form.shape[1] * form.shape[2];
  const out = new Float32Array(paths.length * numel);
  await mapLimit(paths, opts.concurrency ?? DEFAULT_CONCURRENCY, (path, n) => decodeImageInto(path, form, out, n * numel));
  return out;
}

export interface VqaExample {
  pid: string;
  problem: Problem;
  /** C×H×W view into the split's image tensor (empty when the split was loaded without images). */
  image: Float32Array;
  /** Quadrant classes (TL, TR, BL, BR) where the dataset records them (ours: grids.json). */
  classes?: readonly number[];
  /** how each quadrant's item is drawn, where recorded */
  looks?: Quad<Look>;
}

export interface CaptionExample {
  imgid: number;
  captions: string[];
  image: Float32Array;
}

export interface LoadedSplit {
  split: SplitName;
  /** [C, H, W] of every image; undefined when loaded without images (a model that takes none) */
  imageShape?: readonly [number, number, number];
  /** [nImages, C, H, W]; VQA and caption examples that share a file share a slice. */
  images: Float32Array;
  vqa: VqaExample[];
  captions: CaptionExample[];
  /** Problems without an image (ScienceQA has many text-only ones): skipped, counted here. */
  skippedNoImage: number;
  /** digest of the decoded images in order (which file each example uses is in the index's digest) */
  digest: string;
}

export interface DatasetIndex {
  dir: string;
  /** where dataset_coco.json's `filepath`/`filename` are relative to (default: `dir`) */
  cocoRoot: string;
  problems: Problems;
  pidSplits: PidSplits;
  coco?: CocoDataset;
  grids?: Record<string, Composite>;
  /** the dataset's own tokenizer.json, if it has one */
  tokenizer?: Tokenizer;
  manifest?: Manifest;
  /** digest of the dataset's JSON files (the tokenizer's included; the manifest, which records build times, left out) */
  digest: string;
}

/**
 * The JSON side of a dataset dir: ScienceQA's problems.json + pid_splits.json, COCO-Karpathy's
 * dataset_coco.json, or both; grids, tokenizer and manifest are optional (real ScienceQA has none).
 */
export async function readIndex(dir: string, opts: { cocoRoot?: string } = {}): Promise<DatasetIndex> {
  const texts: string[] = [];
  const read = async <T>(name: string) => {
    const { value, text } = await readJsonText<T>(join(dir, name));
    texts.push(`${name}:${sha256(text)}`);
    return value;
  };
  const optional = async <T>(name: string) => (existsSync(join(dir, name)) ? read<T>(name) : undefined);
  const hasProblems = existsSync(join(dir, FILES.problems));
  // when a directory holds neither, problems.json is the error to report
  if (!hasProblems && !existsSync(join(dir, FILES.captions))) await read(FILES.problems);
  const [problems, pidSplits, coco, grids, tokenizerJson, tokenizerConfig, manifest] = await Promise.all([
    hasProblems ? read<Problems>(FILES.problems) : ({} as Problems),
    hasProblems ? read<PidSplits>(FILES.splits) : ({ train: [], val: [], test: [] } as PidSplits),
    optional<CocoDataset>(FILES.captions),
    optional<Record<string, Composite>>(FILES.grids),
    optional<unknown>(FILES.tokenizer),
    optional<unknown>(FILES.tokenizerConfig),
    readManifest(dir),
  ]);
  const shape = (ok: boolean, file: string, what: string) => {
    if (!ok) throw new DataError(`${join(dir, file)}: ${what}`);
  };
  shape(
    !!problems && typeof problems === "object" && !Array.isArray(problems),
    FILES.problems,
    "expected an object of problems by pid (ScienceQA's problems.json)",
  );
  shape(!!pidSplits && typeof pidSplits === "object", FILES.splits, "expected an object of pid lists by split (ScienceQA's pid_splits.json)");
  for (const s of SPLITS) shape(pidSplits[s] === undefined || Array.isArray(pidSplits[s]), FILES.splits, `\`${s}\` should be a list of pids`);
  if (coco) shape(Array.isArray(coco.images), FILES.captions, "expected `images`: a list (Karpathy's dataset_coco.json)");
  // The same Hugging Face path as any other tokenizer.json; read here so the digest covers both files.
  const tokenizer = tokenizerJson === undefined ? undefined : hfTokenizer(tokenizerJson, tokenizerConfig, join(dir, FILES.tokenizer));
  return { dir, cocoRoot: opts.cocoRoot ?? dir, problems, pidSplits, coco, grids, tokenizer, manifest, digest: sha256(texts.sort().join("\n")) };
}

/** Karpathy's splits: `restval` is training data, as every caption paper uses it. */
export const cocoSplit = (im: CocoImage): string => (im.split === ("restval" as string) ? "train" : im.split);

function checkProblem(pid: string, p: Problem): void {
  const bad = (what: string) => new DataError(`${FILES.problems}: problem ${pid}: ${what}`);
  if (!p || typeof p !== "object") throw bad("not an object");
  if (typeof p.question !== "string") throw bad("`question` should be a string");
  if (!Array.isArray(p.choices) || p.choices.length < 2 || p.choices.some((c) => typeof c !== "string"))
    throw bad("`choices` should be a list of at least two strings");
  if (p.choices.length > LETTERS.length) throw bad(`${p.choices.length} choices; at most ${LETTERS.length} (A–${LETTERS[LETTERS.length - 1]}) are read`);
  if (!Number.isInteger(p.answer) || p.answer < 0 || p.answer >= p.choices.length)
    throw bad(`\`answer\` ${JSON.stringify(p.answer)} is not the index of one of its ${p.choices.length} choices`);
  if (p.hint !== undefined && p.hint !== null && typeof p.hint !== "string") throw bad("`hint` should be a string");
}

function checkCaptions(im: CocoImage): string[] {
  const sentences = im.sentences;
  if (!Array.isArray(sentences) || !sentences.length || sentences.some((s) => typeof s?.raw !== "string"))
    throw new DataError(`${FILES.captions}: image ${JSON.stringify(im.imgid ?? im.filename)} should have \`sentences\` with a \`raw\` caption each`);
  if (typeof im.filename !== "string") throw new DataError(`${FILES.captions}: image ${JSON.stringify(im.imgid)} has no \`filename\``);
  return sentences.map((x) => x.raw);
}

/**
 * One split's problems and caption images. `form`: how image files become the model's input
 * (data/preprocess.ts); null loads none (a model that takes no image). ScienceQA's own
 * release nests images by split (images/test/<pid>/image.png), ours is flat (images/<pid>/image.png).
 */
export async function loadSplit(index: DatasetIndex, split: SplitName, opts: { form?: ImageForm | null; concurrency?: number } = {}): Promise<LoadedSplit> {
  const form = opts.form === undefined ? defaultForm() : opts.form;
  const paths: string[] = [];
  const slot = new Map<string, number>();
  const imageIndex = (path: string) => {
    if (!slot.has(path)) slot.set(path, paths.push(path) - 1);
    return slot.get(path)!;
  };

  const imageRoot = existsSync(join(index.dir, FILES.images, split)) ? join(index.dir, FILES.images, split) : join(index.dir, FILES.images);
  let skippedNoImage = 0;
  const vqaRefs: { pid: string; problem: Problem; at: number }[] = [];
  for (const pid of index.pidSplits[split] ?? []) {
    const problem = index.problems[pid];
    if (!problem) throw new DataError(`${FILES.splits}: pid ${pid} (${split}) is not in ${FILES.problems}`);
    checkProblem(pid, problem);
    if (!problem.image) {
      skippedNoImage++;
      continue;
    }
    vqaRefs.push({ pid, problem: problem.hint === null ? { ...problem, hint: "" } : problem, at: imageIndex(join(imageRoot, pid, problem.image)) });
  }
  const capRefs = (index.coco?.images ?? [])
    .filter((im) => cocoSplit(im) === split)
    .map((im) => ({ imgid: im.imgid, captions: checkCaptions(im), at: imageIndex(join(index.cocoRoot, im.filepath ?? "", im.filename)) }));

  const numel = form ? form.shape[0] * form.shape[1] * form.shape[2] : 0;
  const images = form ? await decodeImages(paths, form, { concurrency: opts.concurrency }) : new Float32Array(0);
  const view = (at: number) => images.subarray(at * numel, (at + 1) * numel);
  return {
    split,
    ...(form && { imageShape: form.shape }),
    images,
    vqa: vqaRefs.map(({ pid, problem, at }) => ({ pid, problem, image: view(at), classes: index.grids?.[pid]?.classes, looks: index.grids?.[pid]?.looks })),
    captions: capRefs.map(({ imgid, captions, at }) => ({ imgid, captions, image: view(at) })),
    skippedNoImage,
    digest: sha256(new Uint8Array(images.buffer, images.byteOffset, images.byteLength)),
  };
}

/** A dataset as one stage sees it: its images in the stage model's form, its text in the stage's prompt format and tokenizer. */
export interface LoadedDataset extends DatasetIndex {
  splits: Partial<Record<SplitName, LoadedSplit>>;
  /** how problems become text (the train section's `prompt`) */
  format: PromptFormat;
  /** set when `tokenizer` is the model's rather than the dataset's: the digest of its file */
  tokenizerDigest?: string;
}

export async function loadDataset(
  dir: string,
  opts: { splits?: readonly SplitName[]; form?: ImageForm | null; concurrency?: number; cocoRoot?: string } = {},
): Promise<LoadedDataset> {
  const index = await readIndex(dir, { cocoRoot: opts.cocoRoot });
  const splits: Partial<Record<SplitName, LoadedSplit>> = {};
  // One split at a time: each decode already keeps the bounded pool busy.
  for (const s of opts.splits ?? SPLITS) splits[s] = await loadSplit(index, s, opts);
  return { ...index, splits, format: promptFormat(DEFAULT_PROMPT) };
}

/** What a result trained or evaluated on this data depends on: the index files, every loaded split's images and a model's own tokenizer. */
export function datasetDigest(data: LoadedDataset): string {
  const parts = [data.digest, ...SPLITS.map((s) => `${s}:${data.splits[s]?.digest ?? "-"}`)];
  if (data.tokenizerDigest) parts.push(`tokenizer:${data.tokenizerDigest}`);
  return sha256(parts.join("\n"));
}
