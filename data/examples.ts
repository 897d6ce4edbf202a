import { type EncodedExample, type EncodedText, encodeText, type LabelledImage, sequenceLength } from "./batches.ts";
import { captionParts, describePositions } from "./captions.ts";
import type { Quad } from "./composites.ts";
import type { LoadedSplit } from "./loader.ts";
import type { PromptFormat } from "./prompts.ts";
import type { Problem, QuestionType } from "./scienceqa.ts";
import type { Tokenizer } from "./tokenizers/tokenizer.ts";

/** What a stage trains on (a train section's `task`): quadrant labels, text, or image-grounded text. */
export const TASKS = ["classify", "text", "vqa"] as const;
export type Task = (typeof TASKS)[number];

/** Fashion-MNIST composites labelled per quadrant: the ViT pre-training examples (with the question asked of each, for its evaluation). */
export function labelledImages(split: LoadedSplit): (LabelledImage & { readonly problem: Problem })[] {
  return split.vqa.filter((e) => e.classes).map((e) => ({ image: e.image, classes: e.classes!, problem: e.problem }));
}

/**
 * The LM's training text: every question with the picture described in words as its
 * ScienceQA-style context (so the LM learns to answer from a description, binding the
 * right option to its letter; fine-tuning then has the image stand in for the words),
 * and one caption per caption image (rotating phrasings), so questions are the bulk.
 */
export function trainingTexts(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): Categorised<EncodedText>[] {
  const withContext = split.vqa.map((e) => ({
    ...encodeText(tok, format.parts(e.classes ? { ...e.problem, hint: describePositions(e.classes as Quad<number>, e.looks) } : e.problem)),
    category: e.problem.category as QuestionType,
  }));
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
export function solutionGivenTexts(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): Categorised<EncodedText>[] {
  return split.vqa.flatMap((e) => {
    const parts = format.parts(e.problem);
    const solution = e.problem.solution.trim();
    if (!solution || !parts.answer.startsWith(solution)) return [];
    const { prompt, answer } = encodeText(tok, parts);
    const k = solutionTokens(tok, answer, solution);
    return [{ prompt: [...prompt, ...answer.slice(0, k)], answer: answer.slice(k), category: e.problem.category as QuestionType }];
  });
}

/** A training text or example with its question type, when it is a question. */
export type Categorised<T> = T & { readonly category?: QuestionType };

/**
 * Each text of a question type listed in `times` that many times in all (a train section's
 * `oversample`), the rest once, in their order: a type the LM learns slowly (counting)
 * gets more of the steps without dropping any other text.
 */
export function oversampled<T>(texts: readonly Categorised<T>[], times: Readonly<Partial<Record<QuestionType, number>>>): Categorised<T>[] {
  return texts.flatMap((t) => Array<Categorised<T>>((t.category && times[t.category]) || 1).fill(t));
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
export function groundedExamples(tok: Tokenizer, split: LoadedSplit, format: PromptFormat): Categorised<EncodedExample>[] {
  return [
    ...split.vqa.map((e) => ({ ...encodeText(tok, format.parts(e.problem)), image: e.image, category: e.problem.category as QuestionType })),
    ...split.captions.map((c, i) => ({ ...encodeText(tok, captionParts(c.captions[i % c.captions.length])), image: c.image })),
  ];
}

/** T for a set of sequences: the longest, rounded up to a multiple of 4. */
export function seqLength(texts: readonly EncodedText[]): number {
  return Math.ceil(Math.max(...texts.map(sequenceLength)) / 4) * 4;
}
