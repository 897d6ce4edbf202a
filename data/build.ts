import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import sharp from "sharp";
import { seededRng } from "../util/rng.ts";
import { encodeText, sequenceLength } from "./batches.ts";
import { captionParts, captionsFor, CAPTIONS_PER_IMAGE, cocoImage, type CocoDataset, type CocoImage } from "./captions.ts";
import { GRID_SIZE, itemPool, renderComposite, type Composite, type ItemPool } from "./composites.ts";
import { FASHION_MNIST_DIR, loadFashionMnist } from "./fashion-mnist.ts";
import { DEFAULT_CONCURRENCY, FILES, mapLimit, readManifest } from "./loader.ts";
import { generateProblems, promptParts, SPLITS, type PidSplits, type Problems, type SplitName } from "./scienceqa.ts";
import { hfTokenizer } from "./tokenizers/hf.ts";
import type { Tokenizer } from "./tokenizers/tokenizer.ts";
import { buildWordLevel, type TokenizerFiles } from "./tokenizers/word-level.ts";
import { processAlive } from "../io/process-identity.ts";

/** Bump when the generated content changes, so existing datasets are rebuilt rather than reused. */
export const DATA_VERSION = 6;

export interface BuildOptions {
  seed?: number;
  train?: number;
  val?: number;
  test?: number;
  /** Fraction of each split's images that also get captions. */
  captionShare?: number;
  /** Folder with the Fashion-MNIST *-ubyte.gz files. */
  source?: string;
  concurrency?: number;
  onProgress?: (p: BuildProgress) => void;
}

export interface BuildProgress {
  phase: "generate" | "images" | "done";
  done: number;
  total: number;
}

export const DEFAULT_BUILD = { seed: 0, train: 12000, val: 1000, test: 2000, captionShare: 0.5 } as const;

/** Everything that determines the content: two builds with equal keys produce identical files. */
export interface BuildKey {
  version: number;
  seed: number;
  train: number;
  val: number;
  test: number;
  captionShare: number;
}

export interface Manifest {
  name: "dehvf-fashion-composites";
  key: BuildKey;
  problems: Record<SplitName, number>;
  captionImages: Record<SplitName, number>;
  captionsPerImage: number;
  vocabSize: number;
  /** Positions <bos> prompt answer <eos> takes (the T an LM batch needs), longest per task. */
  maxSequence: { vqa: number; caption: number };
  imageSize: number;
  sources: { train: "train"; val: "t10k"; test: "t10k" };
  buildSeconds: number;
}

export interface BuildResult {
  dir: string;
  manifest: Manifest;
  reused: boolean;
}

const sameKey = (a: BuildKey | undefined, b: BuildKey) => a !== undefined && JSON.stringify(a) === JSON.stringify(b);

/** Temp/old dirs of builds whose process is gone; a live concurrent build's are left alone. */
async function removeStale(dir: string): Promise<void> {
  const parent = dirname(dir);
  if (!existsSync(parent)) return;
  const pattern = new RegExp(`^${basename(dir).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(?:tmp|old)-(\\d+)$`);
  for (const name of await readdir(parent)) {
    const m = pattern.exec(name);
    if (m && (Number(m[1]) === process.pid || !processAlive(Number(m[1])))) await rm(join(parent, name), { recursive: true, force: true });
  }
}

interface Generated {
  problems: Problems;
  pidSplits: PidSplits;
  grids: Record<string, Composite>;
  coco: CocoDataset;
  tokenizer: Tokenizer;
  tokenizerFiles: TokenizerFiles;
  maxSequence: Manifest["maxSequence"];
  captionImages: Record<SplitName, number>;
}

/** Pure given the pools: problems, captions and tokenizer for all splits. */
function generate(pools: Record<SplitName, ItemPool>, key: BuildKey): Generated {
  const problems: Problems = {};
  const pidSplits: PidSplits = { train: [], val: [], test: [] };
  const grids: Record<string, Composite> = {};
  const images: CocoImage[] = [];
  const captionImages = { train: 0, val: 0, test: 0 };
  let pid = 1;
  let sentid = 0;
  for (const split of SPLITS) {
    const generated = generateProblems(pools[split], key[split], split, key.seed);
    const rand = seededRng(key.seed, `captions:${split}`);
    captionImages[split] = Math.ceil(key.captionShare * generated.length);
    generated.forEach(({ problem, composite }, i) => {
      const id = String(pid++);
      problems[id] = problem;
      pidSplits[split].push(id);
      grids[id] = composite;
      if (i < captionImages[split]) {
        const fields = { filepath: `${FILES.images}/${id}`, filename: problem.image!, imgid: images.length, split, cocoid: Number(id) };
        images.push(cocoImage(fields, captionsFor(composite.classes, rand), sentid));
        sentid += CAPTIONS_PER_IMAGE;
      }
    });
  }
  const vqaTexts = (split: SplitName | null) =>
    Object.values(problems)
      .filter((p) => !split || p.split === split)
      .map(promptParts);
  const capTexts = (split: SplitName | null) =>
    images.filter((im) => !split || im.split === split).flatMap((im) => im.sentences.map((s) => captionParts(s.raw)));
  // Train text only: val/test words the tokenizer never saw must show up as <unk>, not leak in.
  const tokenizerFiles = buildWordLevel([...vqaTexts("train"), ...capTexts("train")].flatMap((t) => [t.prompt, t.answer]));
  // Encoded through the Hugging Face path, as the loader will read the written files back.
  const tokenizer = hfTokenizer(tokenizerFiles.json, tokenizerFiles.config, "the word-level vocabulary built from the training text");
  const longest = (texts: { prompt: string; answer: string }[]) => texts.reduce((m, t) => Math.max(m, sequenceLength(encodeText(tokenizer, t))), 0);
  return {
    problems,
    pidSplits,
    grids,
    coco: { dataset: "fashion", images },
    tokenizer,
    tokenizerFiles,
    maxSequence: { vqa: longest(vqaTexts(null)), caption: longest(capTexts(null)) },
    captionImages,
  };
}

async function writePngs(dir: string, g: Generated, pools: Record<SplitName, ItemPool>, concurrency: number, onProgress?: BuildOptions["onProgress"]) {
  const pids = Object.keys(g.problems);
  const every = Math.max(1, Math.floor(pids.length / 100));
  let done = 0;
  await mapLimit(pids, concurrency, async (pid) => {
    const pixels = renderComposite(pools[g.problems[pid].split], g.grids[pid]);
    const folder = join(dir, FILES.images, pid);
    await mkdir(folder, { recursive: true });
    await sharp(pixels, { raw: { width: GRID_SIZE, height: GRID_SIZE, channels: 1 } })
      .toColourspace("b-w") // else sharp writes the grey input as RGB
      .png()
      .toFile(join(folder, g.problems[pid].image!));
    if (++done % every === 0 || done === pids.length) onProgress?.({ phase: "images", done, total: pids.length });
  });
}

/**
 * Builds the default VQA + caption data from Fashion-MNIST into `dir`. The files are written
 * into a sibling temp dir that is renamed into place, so `dir` is either absent, the previous
 * dataset, or complete; a dataset with the same key is reused as is.
 */
export async function buildDefaultData(dir: string, opts: BuildOptions = {}): Promise<BuildResult> {
  const started = performance.now();
  dir = resolve(dir);
  const key: BuildKey = {
    version: DATA_VERSION,
    seed: opts.seed ?? DEFAULT_BUILD.seed,
    train: opts.train ?? DEFAULT_BUILD.train,
    val: opts.val ?? DEFAULT_BUILD.val,
    test: opts.test ?? DEFAULT_BUILD.test,
    captionShare: opts.captionShare ?? DEFAULT_BUILD.captionShare,
  };
  await removeStale(dir);
  const existing = await readManifest(dir).catch(() => undefined);
  if (existing && sameKey(existing.key, key)) return { dir, manifest: existing, reused: true };

  const source = opts.source ?? FASHION_MNIST_DIR;
  const train = loadFashionMnist("train", source);
  const t10k = loadFashionMnist("t10k", source);
  // Val and test draw on disjoint halves of t10k, and train on the train split only.
  const half = Math.floor(t10k.n / 2);
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
  const pools: Record<SplitName, ItemPool> = {
    train: itemPool(train, "train"),
    val: itemPool(t10k, "t10k", range(0, half)),
    test: itemPool(t10k, "t10k", range(half, t10k.n)),
  };
  opts.onProgress?.({ phase: "generate", done: 0, total: 1 });
  const g = generate(pools, key);
  opts.onProgress?.({ phase: "generate", done: 1, total: 1 });

  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(tmp, { recursive: true });
  try {
    await writePngs(tmp, g, pools, opts.concurrency ?? DEFAULT_CONCURRENCY, opts.onProgress);
    const manifest: Manifest = {
      name: "dehvf-fashion-composites",
      key,
      problems: { train: key.train, val: key.val, test: key.test },
      captionImages: g.captionImages,
      captionsPerImage: CAPTIONS_PER_IMAGE,
      vocabSize: g.tokenizer.size,
      maxSequence: g.maxSequence,
      imageSize: GRID_SIZE,
      sources: { train: "train", val: "t10k", test: "t10k" },
      buildSeconds: 0,
    };
    const json = (name: string, value: unknown) => writeFile(join(tmp, name), JSON.stringify(value));
    await Promise.all([
      json(FILES.problems, g.problems),
      json(FILES.splits, g.pidSplits),
      json(FILES.captions, g.coco),
      json(FILES.grids, g.grids),
      writeFile(join(tmp, FILES.tokenizer), JSON.stringify(g.tokenizerFiles.json, null, 1)),
      writeFile(join(tmp, FILES.tokenizerConfig), JSON.stringify(g.tokenizerFiles.config, null, 1)),
    ]);
    manifest.buildSeconds = Math.round((performance.now() - started) / 10) / 100;
    // The manifest goes in last: a dir with one is complete.
    await writeFile(join(tmp, FILES.manifest), JSON.stringify(manifest, null, 2));
    const placed = await swapInto(tmp, dir);
    opts.onProgress?.({ phase: "done", done: 1, total: 1 });
    return placed ? { dir, manifest, reused: false } : { dir, manifest: (await readManifest(dir))!, reused: true };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Renames tmp to dir, moving an older dataset aside first; false when a concurrent build got there first (its result stands). */
async function swapInto(tmp: string, dir: string): Promise<boolean> {
  const old = `${dir}.old-${process.pid}`;
  const hadOld = existsSync(dir);
  if (hadOld) await rename(dir, old);
  try {
    await rename(tmp, dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST" || code === "ENOTEMPTY") {
      await rm(old, { recursive: true, force: true });
      return false;
    }
    // Put the previous dataset back rather than leave nothing.
    if (hadOld) await rename(old, dir).catch(() => undefined);
    throw e;
  }
  await rm(old, { recursive: true, force: true });
  return true;
}

// `tsx data/build.ts [dir] [train val test]`: builds (or reuses) and prints the manifest.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [dir = "out/data/fashion", train, val, test] = process.argv.slice(2);
  const n = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  let shown = "";
  const result = await buildDefaultData(dir, {
    train: n(train),
    val: n(val),
    test: n(test),
    onProgress: (p) => {
      const line = `${p.phase} ${10 * Math.floor((10 * p.done) / p.total)}%`;
      if (line !== shown) console.error(line);
      shown = line;
    },
  });
  console.log(JSON.stringify({ dir: result.dir, reused: result.reused, ...result.manifest }, null, 2));
}
