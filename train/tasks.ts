import { type Tensor, tensor } from "../compiler/tensor.ts";
import { epochShuffler, lmBatch, textBatch, vitBatch } from "../data/batches.ts";
import { groundedExamples, labelledImages, oversampled, seqLength, solutionGivenTexts, trainingTexts } from "../data/examples.ts";
import type { LoadedDataset } from "../data/loader.ts";
import type { StageConfig } from "./stages.ts";

/** A batch as the plan's named inputs (extra names are ignored by models that lack them). */
export type Feed = Map<string, Tensor>;

/**
 * Scales each row's loss mask to sum to 1, so the loss is the mean over examples of each
 * example's mean token loss: a 20-token caption then weighs as much as a 6-token answer
 * whose one informative token is the option letter (with plain token weighting captions
 * carried ~90% of the gradient and the letters barely moved).
 */
function perRowMean(mask: Float32Array, T: number): void {
  for (let r = 0; r < mask.length / T; r++) {
    const row = mask.subarray(r * T, (r + 1) * T);
    const n = row.reduce((a, x) => a + x, 0);
    if (n > 0) for (let i = 0; i < T; i++) row[i] /= n;
  }
}

export interface TaskData {
  readonly dims: Record<string, number>;
  readonly examples: number;
  /** tokens the loss covers per step (for tokens/s), or items for classification */
  readonly unitsPerStep: number;
  batchAt(step: number): Feed;
}

function textFeed(b: { B: number; T: number; tokens: Int32Array; targets: Int32Array; lossMask: Float32Array; promptMask: Float32Array }): Feed {
  const s = [b.B, b.T];
  return new Map([
    ["tokens", tensor(s, b.tokens)],
    ["targets", tensor(s, b.targets)],
    ["loss_mask", tensor(s, b.lossMask)],
    ["prompt_mask", tensor(s, b.promptMask)],
  ]);
}

/** What of a train section decides its batches. */
export type TaskSettings = Pick<StageConfig, "task" | "batch" | "seed" | "loss" | "solutionGiven" | "oversample">;

/** Training batches of a task, by global step (a pure function of seed and step, so resume sees the same data). */
export function taskData(data: LoadedDataset, stage: TaskSettings): TaskData {
  const { task, batch, seed, loss = "all", solutionGiven = false, oversample = {} } = stage;
  const tok = data.tokenizer!;
  const train = data.splits.train!;
  // [B, C, H, W] as the stage's model takes it; no image when it takes none (loaded without)
  const image = (b: number, pixels: Float32Array): [string, Tensor][] => (train.imageShape ? [["image", tensor([b, ...train.imageShape], pixels)]] : []);
  if (task === "classify") {
    const items = labelledImages(train);
    const sh = epochShuffler(items.length, batch, seed);
    return {
      dims: { B: batch },
      examples: items.length,
      unitsPerStep: batch * 4,
      batchAt(step) {
        const b = vitBatch(items, sh.batchAt(step));
        return new Map([
          ...image(batch, b.image),
          ["targets", tensor([batch, 4], b.labels)],
          ["loss_mask", tensor([batch, 4], new Float32Array(batch * 4).fill(1))],
        ]);
      },
    };
  }
  if (task === "text") {
    const texts = oversampled([...trainingTexts(tok, train, data.format), ...(solutionGiven ? solutionGivenTexts(tok, train, data.format) : [])], oversample);
    const T = seqLength(texts);
    const sh = epochShuffler(texts.length, batch, seed);
    return {
      dims: { B: batch, T },
      examples: texts.length,
      unitsPerStep: batch * T,
      batchAt: (step) => {
        const b = textBatch(tok, texts, sh.batchAt(step), T, loss === "all");
        if (loss === "answer") perRowMean(b.lossMask, T);
        return textFeed(b);
      },
    };
  }
  const ex = groundedExamples(tok, train, data.format);
  const T = seqLength(ex);
  const sh = epochShuffler(ex.length, batch, seed);
  return {
    dims: { B: batch, T },
    examples: ex.length,
    unitsPerStep: batch * T,
    batchAt(step) {
      const b = lmBatch(tok, ex, sh.batchAt(step), T);
      perRowMean(b.lossMask, T);
      const feed = textFeed(b);
      for (const [k, v] of image(batch, b.image)) feed.set(k, v);
      return feed;
    },
  };
}
