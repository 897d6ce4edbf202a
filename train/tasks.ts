import { type Tensor, tensor } from "../compiler/tensor.ts";
import { type EncodedExample, type EncodedText, encodeText, epochShuffler, type LabelledImage, lmBatch, sequenceLength, textBatch, vitBatch } from "../data/batches.ts";
import { captionParts, describePositions } from "../data/captions.ts";
import type { Quad } from "../data/composites.ts";
import type { LoadedDataset, LoadedSplit } from "../data/loader.ts";
import type { PromptFormat } from "../data/prompts.ts";
import type { QuestionType } from "../data/scienceqa.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import type { Task } from "./stages.ts";

/** A batch as the plan's named inputs (extra names are ignored by models that lack them). */
export type Feed = Map<string, Tensor>;


/** Fashion-MNIST composites labelled per quadrant: the ViT pre-training examples. */
export function labelledImages(split: LoadedSplit): LabelledImage[] {
  return split.vqa.filter((e) => e.classes).map((e) => ({ image: e.image, classes: e.classes! }));
}

/**
 * The LM's training text: every question with the picture described in words as its
 * ScienceQA-style context (so the LM learns to answer from a description, binding the
 * right option to its letter; fine-tuning then has the image stand in for the words),
 * and one caption per caption image (rotating phrasings), so questions are the bulk.
 */
export function trainingTexts(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): EncodedText[] {
  const withContext = split.vqa.map((e) => encodeText(tok, format.parts(e.classes ? { ...e.problem, hint: describePositions(e.classes as Quad<number>, e.looks) } : e.problem)));
  return [...withContext, ...split.captions.map((c, i) => encodeText(tok, captionParts(c.captions[i % c.captions.length])))];
}

/**
 * The fine-tuning texts with the solution moved into the prompt: each question without its
 * context, followed by its solution, the loss on what comes after (" The answer is …").
 * A train section's `solution_given = true` adds them to the LM's text, so the LM learns to
 * answer from a solution it did not see described (fine-tuning has no context; its LM must
 * answer from the solution it wrote) rather than only by looking back into the context.
 * The tokens are those of the fine-tuning text, only the loss moves; none when the format's
 * answer gives no solution.
 */
export function solutionGivenTexts(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): EncodedText[] {
  return split.vqa.flatMap((e) => {
    const parts = format.parts(e.problem);
    const solution = e.problem.solution.trim();
    if (!solution || !parts.answer.startsWith(solution)) return [];
    const { prompt, answer } = encodeText(tok, parts);
    const k = solutionTokens(tok, answer, solution);
    return [{ prompt: [...prompt, ...answer.slice(0, k)], answer: answer.slice(k) }];
  });
}

/** How many of `answer`'s leading tokens spell `solution` (the most whose text stays within it). */
function solutionTokens(tok: Tokenizer, answer: readonly number[], solution: string): number {
  let k = 0;
  while (k < answer.length && solution.startsWith(tok.decode(answer.slice(0, k + 1)).trimStart())) k++;
  if (tok.decode(answer.slice(0, k)).trim() !== solution) throw new Error(`the solution "${solution}" does not end on a token boundary of its answer`);
  return k;
}

/**
 * Image-grounded examples for fine-tuning: every VQA problem plus one of each caption
 * image's captions (they rotate over images), so questions stay the bulk of the mix.
 */
export function groundedExamples(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): (EncodedExample & { category?: QuestionType })[] {
  return [
    ...split.vqa.map((e) => ({ ...encodeText(tok, format.parts(e.problem)), image: e.image, category: e.problem.category as QuestionType })),
    ...split.captions.map((c, i) => ({ ...encodeText(tok, captionParts(c.captions[i % c.captions.length])), image: c.image })),
  ];
}

/** T for a set of sequences: the longest, rounded up to a multiple of 4. */
export function seqLength(texts: readonly EncodedText[]): number {
  return Math.ceil(Math.max(...texts.map(sequenceLength)) / 4) * 4;
}

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
  return new Map([["tokens", tensor(s, b.tokens)], ["targets", tensor(s, b.targets)], ["loss_mask", tensor(s, b.lossMask)], ["prompt_mask", tensor(s, b.promptMask)]]);
}

/** Training batches of a task, by global step (a pure function of seed and step, so resume sees the same data). */
export function taskData(task: Task, data: LoadedDataset, batch: number, seed: number, loss: "all" | "answer" = "all", solutionGiven = false): TaskData {
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
        return new Map([...image(batch, b.image), ["targets", tensor([batch, 4], b.labels)], ["loss_mask", tensor([batch, 4], new Float32Array(batch * 4).fill(1))]]);
      },
    };
  }
  if (task === "text") {
    const texts = [...trainingTexts(tok, train, data.format), ...(solutionGiven ? solutionGivenTexts(tok, train, data.format) : [])];
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
