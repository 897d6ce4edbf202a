import { seededRng } from "../util/rng.ts";
import { shuffle } from "./composites.ts";
import type { TextParts } from "./scienceqa.ts";
import { padId, requireSpecial, type Tokenizer } from "./tokenizers/tokenizer.ts";
import { DataError } from "./data-error.ts";

/** Token ids without <bos>/<eos>: the batch adds those, so T is counted the same way everywhere. */
export interface EncodedText {
  prompt: number[];
  answer: number[];
}

export interface EncodedExample extends EncodedText {
  /** C×H×W as the model takes it (data/images.ts), e.g. a view into a loaded split. */
  image: Float32Array;
}

export interface LabelledImage {
  image: Float32Array;
  /** Class per quadrant: TL, TR, BL, BR. */
  classes: readonly number[];
}

export function encodeText(tok: Tokenizer, parts: TextParts): EncodedText {
  return { prompt: tok.encode(parts.prompt), answer: tok.encode(parts.answer) };
}

/** Positions a sequence takes in a batch row: <bos> prompt answer <eos>, shifted by one for next-token targets. */
export function sequenceLength(t: EncodedText): number {
  return t.prompt.length + t.answer.length + 1;
}

export interface TextBatch {
  B: number;
  T: number;
  /** [B, T] <bos> prompt answer, right-padded with <pad> (or <eos>: tokenizers/tokenizer.ts padId). */
  tokens: Int32Array;
  /** [B, T] the next token; <pad> past the end. */
  targets: Int32Array;
  /** [B, T] 1 where the target counts in the loss. */
  lossMask: Float32Array;
  /** [B, T] 1 on the prompt tokens (not <bos>). */
  promptMask: Float32Array;
  /** [B] real (non-pad) positions per row. */
  lengths: Int32Array;
}

export interface LmBatch extends TextBatch {
  /** [B, C, H, W] */
  image: Float32Array;
}

export interface VitBatch {
  B: number;
  image: Float32Array;
  /** [B, 4] */
  labels: Int32Array;
}

function fillText(tok: Tokenizer, texts: readonly EncodedText[], T: number, lossOnPrompt: boolean, what: string): TextBatch {
  const B = texts.length;
  const purpose = `the ${what} layout (<bos> text <eos>, then padding)`;
  const [bos, eos] = (["bos", "eos"] as const).map((s) => requireSpecial(tok, s, purpose));
  const pad = padId(tok, purpose);
  const batch: TextBatch = {
    B,
    T,
    tokens: new Int32Array(B * T).fill(pad),
    targets: new Int32Array(B * T).fill(pad),
    lossMask: new Float32Array(B * T),
    promptMask: new Float32Array(B * T),
    lengths: new Int32Array(B),
  };
  texts.forEach((t, b) => {
    const p = t.prompt.length;
    if (p + 1 >= T) throw new Error(`${what} row ${b}: the prompt takes ${p + 1} of T=${T} positions, leaving none for the answer; raise T`);
    const len = sequenceLength(t);
    if (len > T) throw new Error(`${what} row ${b}: prompt + answer take ${len} positions, T=${T}; raise T to at least ${len}`);
    const seq = [bos, ...t.prompt, ...t.answer, eos];
    const row = b * T;
    for (let i = 0; i < len; i++) {
      batch.tokens[row + i] = seq[i];
      batch.targets[row + i] = seq[i + 1];
      // Position i predicts seq[i+1]: the answer's first token is predicted from the prompt's last.
      if (lossOnPrompt || i >= p) batch.lossMask[row + i] = 1;
      if (i >= 1 && i <= p) batch.promptMask[row + i] = 1;
    }
    batch.lengths[b] = len;
  });
  return batch;
}

/** The rows' images, one after another ([B, C, H, W]); every one the same size. */
export function gatherImages(images: readonly Float32Array[]): Float32Array {
  const numel = images[0]?.length ?? 0;
  const out = new Float32Array(images.length * numel);
  images.forEach((im, b) => {
    if (im.length !== numel) throw new Error(`image ${b}: ${im.length} values, image 0 has ${numel}`);
    out.set(im, b * numel);
  });
  return out;
}

/** VQA or captioning: the loss covers the answer ("The answer is X ." or the caption) and <eos>. */
export function lmBatch(tok: Tokenizer, examples: readonly EncodedExample[], indices: readonly number[], T: number): LmBatch {
  const rows = indices.map((i) => examples[i]);
  return { ...fillText(tok, rows, T, false, "lm batch"), image: gatherImages(rows.map((e) => e.image)) };
}

/** Language-model pre-training on the training text: every real target counts, or (`onPrompt` false) the answers only. */
export function textBatch(tok: Tokenizer, texts: readonly EncodedText[], indices: readonly number[], T: number, onPrompt = true): TextBatch {
  return fillText(
    tok,
    indices.map((i) => texts[i]),
    T,
    onPrompt,
    "text batch",
  );
}

/** ViT pre-training: classify each quadrant. */
export function vitBatch(examples: readonly LabelledImage[], indices: readonly number[]): VitBatch {
  const rows = indices.map((i) => examples[i]);
  const labels = new Int32Array(rows.length * 4);
  rows.forEach((e, b) => {
    if (e.classes.length !== 4) throw new Error(`vit batch row ${b}: ${e.classes.length} labels, expected 4`);
    labels.set(e.classes, b * 4);
  });
  return { B: rows.length, image: gatherImages(rows.map((e) => e.image)), labels };
}

export interface EpochShuffler {
  n: number;
  batchSize: number;
  /** Full batches per epoch; the remainder of each epoch's permutation is dropped to keep shapes fixed. */
  stepsPerEpoch: number;
  /** Example indices of global step `step`: a pure function of (seed, step), so resumed runs see the same data. */
  batchAt(step: number): number[];
}

export function epochShuffler(n: number, batchSize: number, seed: number): EpochShuffler {
  const stepsPerEpoch = Math.floor(n / batchSize);
  if (stepsPerEpoch === 0)
    throw new DataError(`the training split has ${n} examples for this task, fewer than one batch of ${batchSize}: lower \`batch\` or use more data`);
  let cached = { epoch: -1, order: [] as number[] };
  const order = (epoch: number) => {
    if (cached.epoch !== epoch) {
      cached = {
        epoch,
        order: shuffle(
          seededRng(seed, `epoch:${epoch}`),
          Array.from({ length: n }, (_, i) => i),
        ),
      };
    }
    return cached.order;
  };
  return {
    n,
    batchSize,
    stepsPerEpoch,
    batchAt(step) {
      if (!Number.isInteger(step) || step < 0) throw new Error(`batchAt: step ${step} is not a non-negative integer`);
      const k = step % stepsPerEpoch;
      return order(Math.floor(step / stepsPerEpoch)).slice(k * batchSize, (k + 1) * batchSize);
    },
  };
}
