import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { decodeGreyPng } from "./png-grey.ts";
import type { Manifest } from "./build.ts";
import type { CocoDataset } from "./captions.ts";
import { GRID_SIZE, type Composite } from "./composites.ts";
import { SPLITS, type PidSplits, type Problem, type Problems, type SplitName } from "./scienceqa.ts";
import { tokenizerFromJson, type Tokenizer, type TokenizerJson } from "./tokenizer.ts";
import { DataError } from "./data-error.ts";

/** Fashion-MNIST pixel statistics; composites of its items share them. */
export const PIXEL_MEAN = 0.286;
export const PIXEL_STD = 0.353;

export const FILES = {
  problems: "problems.json",
  splits: "pid_splits.json",
  captions: "dataset_coco.json",
  tokenizer: "tokenizer.json",
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

/**
 * Grey, resized to size×size, scaled to [0,1] and standardised; [n, 1, size, size] row-major.
 * Real ScienceQA/COCO images are colour and any size, hence flatten/greyscale/resize.
 */
export async function decodeImages(paths: readonly string[], opts: { size?: number; concurrency?: number } = {}): Promise<Float32Array> {
  const size = opts.size ?? GRID_SIZE;
  const numel = size * size;
  const out = new Float32Array(paths.length * numel);
  await mapLimit(paths, opts.concurrency ?? DEFAULT_CONCURRENCY, async (path, n) => {
    const grey = decodeGreyPng(await readFile(path));
    if (grey && grey.width === size && grey.height === size) {
      for (let i = 0; i < numel; i++) out[n * numel + i] = (grey.pixels[i] / 255 - PIXEL_MEAN) / PIXEL_STD;
      return;
    }
    let raw: { data: Buffer; info: sharp.OutputInfo };
    try {
      raw = await sharp(path).flatten({ background: "#000000" }).greyscale().resize(size, size, { fit: "fill" }).raw().toBuffer({ resolveWithObject: true });
    } catch (e) {
      throw new DataError(`cannot decode image ${path}: ${(e as Error).message}`);
    }
    const stride = raw.info.channels;
    for (let i = 0; i < numel; i++) out[n * numel + i] = (raw.data[i * stride] / 255 - PIXEL_MEAN) / PIXEL_STD;
  });
  return out;
}

export interface VqaExample {
  pid: string;
  problem: Problem;
  /** 1×size×size view into the split's image tensor. */
  image: Float32Array;
  /** Quadrant classes (TL, TR, BL, BR) where the dataset records them (ours: grids.json). */
  classes?: readonly number[];
}

export interface CaptionExample {
  imgid: number;
  captions: string[];
  image: Float32Array;
}

export interface LoadedSplit {
  split: SplitName;
  /** [nImages, 1, size, size]; VQA and caption examples that share a file share a slice. */
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
  problems: Problems;
  pidSplits: PidSplits;
  coco?: CocoDataset;
  grids?: Record<string, Composite>;
  tokenizer?: Tokenizer;
  manifest?: Manifest;
  /** digest of the dataset's JSON files (the tokenizer's included; the manifest, which records build times, left out) */
  digest: string;
}

/** The JSON side of a dataset dir; captions, grids, tokenizer and manifest are optional (real ScienceQA has none). */
export async function readIndex(dir: string): Promise<DatasetIndex> {
  const texts: string[] = [];
  const read = async <T>(name: string) => {
    const { value, text } = await readJsonText<T>(join(dir, name));
    texts.push(`${name}:${sha256(text)}`);
    return value;
  };
  const optional = async <T>(name: string) => (existsSync(join(dir, name)) ? read<T>(name) : undefined);
  // problems.json first: when a directory holds no dataset, that is the error to report
  const problems = await read<Problems>(FILES.problems);
  const [pidSplits, coco, grids, tokenizer, manifest] = await Promise.all([
    read<PidSplits>(FILES.splits),
    optional<CocoDataset>(FILES.captions),
    optional<Record<string, Composite>>(FILES.grids),
    optional<TokenizerJson>(FILES.tokenizer).then((json) => json && tokenizerFromJson(json, join(dir, FILES.tokenizer))),
    readManifest(dir),
  ]);
  return { dir, problems, pidSplits, coco, grids, tokenizer, manifest, digest: sha256(texts.sort().join("\n")) };
}

export async function loadSplit(index: DatasetIndex, split: SplitName, opts: { size?: number; concurrency?: number } = {}): Promise<LoadedSplit> {
  const size = opts.size ?? GRID_SIZE;
  const paths: string[] = [];
  const slot = new Map<string, number>();
  const imageIndex = (path: string) => {
    if (!slot.has(path)) slot.set(path, paths.push(path) - 1);
    return slot.get(path)!;
  };

  // ScienceQA's release nests images by split (images/test/<pid>/image.png); ours is flat (images/<pid>/image.png).
  const imageRoot = existsSync(join(index.dir, FILES.images, split)) ? join(index.dir, FILES.images, split) : join(index.dir, FILES.images);
  let skippedNoImage = 0;
  const vqaRefs: { pid: string; problem: Problem; at: number }[] = [];
  for (const pid of index.pidSplits[split] ?? []) {
    const problem = index.problems[pid];
    if (!problem) throw new DataError(`${FILES.splits}: pid ${pid} (${split}) is not in ${FILES.problems}`);
    if (!problem.image) {
      skippedNoImage++;
      continue;
    }
    vqaRefs.push({ pid, problem, at: imageIndex(join(imageRoot, pid, problem.image)) });
  }
  const capRefs = (index.coco?.images ?? [])
    .filter((im) => im.split === split)
    .map((im) => ({ imgid: im.imgid, captions: im.sentences.map((s) => s.raw), at: imageIndex(join(index.dir, im.filepath, im.filename)) }));

  const images = await decodeImages(paths, { size, concurrency: opts.concurrency });
  const view = (at: number) => images.subarray(at * size * size, (at + 1) * size * size);
  return {
    split,
    images,
    vqa: vqaRefs.map(({ pid, problem, at }) => ({ pid, problem, image: view(at), classes: index.grids?.[pid]?.classes })),
    captions: capRefs.map(({ imgid, captions, at }) => ({ imgid, captions, image: view(at) })),
    skippedNoImage,
    digest: sha256(new Uint8Array(images.buffer, images.byteOffset, images.byteLength)),
  };
}

export interface LoadedDataset extends DatasetIndex {
  splits: Partial<Record<SplitName, LoadedSplit>>;
}

export async function loadDataset(dir: string, opts: { splits?: readonly SplitName[]; size?: number; concurrency?: number } = {}): Promise<LoadedDataset> {
  const index = await readIndex(dir);
  const splits: Partial<Record<SplitName, LoadedSplit>> = {};
  // One split at a time: each decode already keeps the bounded pool busy.
  for (const s of opts.splits ?? SPLITS) splits[s] = await loadSplit(index, s, opts);
  return { ...index, splits };
}

/** What a result trained or evaluated on this data depends on: the index files and every loaded split's images. */
export function datasetDigest(data: LoadedDataset): string {
  return sha256([data.digest, ...SPLITS.map((s) => `${s}:${data.splits[s]?.digest ?? "-"}`)].join("\n"));
}
