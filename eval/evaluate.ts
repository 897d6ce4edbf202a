import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type WeightStorage } from "../lowering/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { encodeText } from "../data/batches.ts";
import { captionParts, describePositions } from "../data/captions.ts";
import type { Quad } from "../data/composites.ts";
import type { LoadedSplit } from "../data/loader.ts";
import type { Problem } from "../data/scienceqa.ts";
import type { PromptFormat } from "../data/prompts.ts";
import { padId, requireSpecial, type Tokenizer } from "../data/tokenizers/tokenizer.ts";
import { generateBatch } from "../generate/generate.ts";
import type { StepModel } from "../runtime/decoder.ts";
import type { Gpu } from "../runtime/device.ts";
import { type CompileHook, createExecutor, type PlanExecutor } from "../runtime/executor.ts";
import { uploadParams } from "../runtime/param-upload.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { answerFromItems } from "../data/answer-from-items.ts";
import { labelledImages } from "../data/examples.ts";
import { captionMetrics, multipleChoiceAccuracy, type MultipleChoiceAccuracy } from "./metrics.ts";

/**
 * A model's forward compiled for fixed dims, with its parameters on the device: what
 * evaluation and generation run. Inputs it does not have are ignored.
 */
export class Predictor {
  private constructor(
    readonly model: CompiledModel,
    readonly dims: Readonly<Record<string, number>>,
    private readonly ex: PlanExecutor,
  ) {}

  /** `weights`: how frozen weights are stored (lowering/plan.ts PlanOptions.weights) */
  static async create(
    gpu: Gpu,
    model: CompiledModel,
    dims: Readonly<Record<string, number>>,
    params: ReadonlyMap<string, Tensor>,
    compiling?: CompileHook,
    weights?: WeightStorage,
  ): Promise<Predictor> {
    const ex = await createExecutor(gpu, buildPlan(model, dims, planTarget(gpu), undefined, { weights }), model.program.sources, compiling);
    await uploadParams(ex, model, params);
    return new Predictor(model, dims, ex);
  }

  /** New values for some parameters (e.g. the fine-tuned ones between evaluations). */
  update(params: ReadonlyMap<string, Tensor>): void {
    this.ex.writeParams(params, { partial: true });
  }

  async forward(inputs: ReadonlyMap<string, Tensor>): Promise<Tensor> {
    const [out] = await this.ex.run(inputs, { read: [this.ex.plan.outputs[0].name] });
    return out;
  }

  /** Named outputs of one run: the model's own, or taps added as outputs (compiler/tap-outputs.ts). */
  outputs(inputs: ReadonlyMap<string, Tensor>, names: readonly string[]): Promise<Tensor[]> {
    return this.ex.run(inputs, { read: names });
  }

  destroy(): void {
    this.ex.destroy();
  }
}

/** How far an evaluation is (examples decoded of all it will decode), for progress lines. */
export interface Tally {
  done: number;
  total: number;
}

/** Rows of `n` examples in batches of `B`; the last batch is padded by repeating row 0 (its results are dropped). */
export function* batches(n: number, B: number): Generator<{ idx: number[]; real: number }> {
  for (let s = 0; s < n; s += B) {
    const idx = Array.from({ length: B }, (_, i) => (s + i < n ? s + i : 0));
    yield { idx, real: Math.min(B, n - s) };
  }
}

/** Per-quadrant classification accuracy of a [B, 4, 10] classifier. */
export async function evalClassifier(
  p: Predictor,
  split: LoadedSplit,
  limit = Infinity,
  tally?: Tally,
): Promise<{ accuracy: number; items: number; answersFromItems: MultipleChoiceAccuracy }> {
  const rows = labelledImages(split).slice(0, limit);
  if (tally) tally.total += rows.length;
  if (!split.imageShape) throw new Error(`the ${split.split} split was loaded without images`);
  const B = p.dims.B;
  let correct = 0;
  const answered: { category: string; correct: boolean }[] = [];
  for (const { idx, real } of batches(rows.length, B)) {
    const image = new Float32Array(B * rows[0].image.length);
    idx.forEach((i, b) => image.set(rows[i].image, b * rows[0].image.length));
    const out = await p.forward(new Map([["image", tensor([B, ...split.imageShape], image)]]));
    for (let b = 0; b < real; b++) {
      const { classes, problem } = rows[idx[b]];
      const scores = [0, 1, 2, 3].map((q) => out.data.subarray((b * 4 + q) * 10, (b * 4 + q + 1) * 10));
      scores.forEach((row, q) => {
        if (row.indexOf(Math.max(...row)) === classes[q]) correct++;
      });
      const answer = answerFromItems(problem, scores);
      if (answer !== undefined) answered.push({ category: problem.category, correct: answer === problem.choices[problem.answer] });
    }
    if (tally) tally.done += real;
  }
  return { accuracy: correct / (rows.length * 4), items: rows.length, answersFromItems: multipleChoiceAccuracy(answered) };
}

/**
 * Greedy answers for rows of prompts (token ids, without BOS) and images ([C, H, W] each:
 * `imageShape`; none when the model takes no image), B rows at a time
 * through the model's prefill and decode plans (the KV cache; the ViT and any image memory
 * run once per row). Every batch is laid out at the same prompt length, so one prefill plan
 * serves all; the last batch is padded with row 0 (its results are dropped).
 */
export async function greedyAnswers(
  decoder: StepModel,
  tok: Tokenizer,
  rows: readonly { prompt: number[]; image: Float32Array }[],
  opts: { maxNew: number; stopAfter?: ReadonlySet<number>; tally?: Tally; takesPromptMask: boolean; imageShape?: readonly number[] },
): Promise<number[][]> {
  const B = decoder.batch;
  const purpose = "greedy decoding (<bos> prompt, padded)";
  const [pad, bos] = [padId(tok, purpose), requireSpecial(tok, "bos", purpose)];
  const T = 1 + Math.max(0, ...rows.map((r) => r.prompt.length));
  const stop = new Set([tok.special.eos].filter((x): x is number => x !== undefined));
  const out: number[][] = [];
  for (const { idx, real } of batches(rows.length, B)) {
    const extra = new Map<string, Tensor>();
    if (opts.imageShape) {
      const numel = opts.imageShape.reduce((a, x) => a * x, 1);
      const image = new Float32Array(B * numel);
      idx.forEach((i, b) => image.set(rows[i].image, b * numel));
      extra.set("image", tensor([B, ...opts.imageShape], image));
    }
    // the prompt's own tokens, not BOS, as in training (data/batches.ts)
    if (opts.takesPromptMask)
      extra.set(
        "prompt_mask",
        tensor(
          [B, T],
          Float32Array.from({ length: B * T }, (_, k) => (k % T >= 1 && k % T <= rows[idx[Math.floor(k / T)]].prompt.length ? 1 : 0)),
        ),
      );
    const gen = await generateBatch(
      decoder,
      idx.map((i) => [bos, ...rows[i].prompt]),
      { maxNew: opts.maxNew, promptLength: T, pad, stop, stopAfter: opts.stopAfter, extra },
    );
    out.push(...gen.slice(0, real));
    if (opts.tally) opts.tally.done += real;
  }
  return out;
}

export interface VqaReport {
  readonly mc: MultipleChoiceAccuracy;
  readonly chance: number;
  readonly captions: { bleu4: number; ciderD: number; images: number };
  readonly samples: readonly { question: string; generated: string; answer: string }[];
  /**
   * Where answers start with the problem's solution (formats "-EA", "-EC"): per question type,
   * how often the generated solution is the reference's, and the accuracy among those. It
   * splits the errors between the solution (for the fusions: reading the picture) and the
   * answer drawn from it (the LM).
   */
  readonly solutions?: { readonly right: MultipleChoiceAccuracy; readonly accuracyWhenRight: MultipleChoiceAccuracy };
}

/** Whether `generated` starts with the reference answer's text up to the end of its solution; undefined where the answer holds no solution. */
export function solutionRight(tok: Tokenizer, format: PromptFormat, p: Problem, generated: string): boolean | undefined {
  // both sides through the tokenizer, so spacing and case are compared as the model writes them
  const text = (t: string) => tok.decode(tok.encode(t));
  const reference = format.answer(p, p.answer);
  const at = p.solution ? reference.indexOf(p.solution) : -1;
  if (at < 0) return undefined;
  const upToSolution = text(reference.slice(0, at + p.solution.length));
  return text(generated).startsWith(upToSolution);
}

/**
 * What decoding an answer needs: room for the longest answer (and EOS), and the tokens it may
 * stop after, the ones that end "The answer is X" for each option X (where the tokenizer
 * keeps that ending a token of its own and nothing before it in the answer is one).
 */
function answerDecoding(tok: Tokenizer, format: PromptFormat, problems: readonly Problem[]): { maxNew: number; stopAfter?: Set<number> } {
  const memo = new Map<string, number[]>();
  const encode = (text: string) => memo.get(text) ?? memo.set(text, tok.encode(text)).get(text)!;
  let longest = 0;
  const stop = new Set<number>();
  let stopsEveryChoice = true;
  for (const p of problems)
    p.choices.forEach((_, i) => {
      const full = encode(format.answer(p, i));
      longest = Math.max(longest, full.length);
      const upTo = format.answerUpToChoice(p, i);
      const head = upTo === undefined ? undefined : encode(upTo);
      const last = head?.at(-1);
      if (head && last !== undefined && head.every((t, k) => full[k] === t) && !head.slice(0, -1).includes(last)) stop.add(last);
      else stopsEveryChoice = false;
    });
  // a token that ends one option's answer must not stand before another's choice
  for (const p of problems)
    p.choices.forEach((_, i) => {
      const upTo = format.answerUpToChoice(p, i);
      if (
        upTo !== undefined &&
        encode(upTo)
          .slice(0, -1)
          .some((t) => stop.has(t))
      )
        stopsEveryChoice = false;
    });
  return { maxNew: Math.max(6, longest + 1), ...(stopsEveryChoice && stop.size && { stopAfter: stop }) };
}

/** Multiple-choice accuracy per question type (ScienceQA-style) and caption BLEU-4 / CIDEr-D, all by greedy decoding. */
export async function evalVqa(
  decoder: StepModel,
  tok: Tokenizer,
  split: LoadedSplit,
  opts: { problems?: number; captionImages?: number; tally?: Tally; takesPromptMask: boolean; maxCaption: number; format: PromptFormat; described?: boolean },
): Promise<VqaReport> {
  // `described`: the picture comes as words in the context (a language model on its own, as it was pre-trained)
  const probs = split.vqa
    .slice(0, opts.problems ?? Infinity)
    .map((e) => (opts.described && e.classes ? { ...e, problem: { ...e.problem, hint: describePositions(e.classes as Quad<number>, e.looks) } } : e));
  const caps = split.captions.slice(0, opts.captionImages ?? Infinity);
  if (opts.tally) opts.tally.total += probs.length + caps.length;
  const { format } = opts;
  const rows = probs.map((e) => ({ prompt: encodeText(tok, format.parts(e.problem)).prompt, image: e.image }));
  // "The answer is X": decoding stops at the option letter, which is all that is scored
  const decoding = answerDecoding(
    tok,
    format,
    probs.map((e) => e.problem),
  );
  const common = { tally: opts.tally, takesPromptMask: opts.takesPromptMask, imageShape: opts.described ? undefined : split.imageShape };
  const answers = await greedyAnswers(decoder, tok, rows, { ...decoding, ...common });
  const decoded = answers.map((a) => tok.decode(a));
  const items = probs.map((e, i) => ({ category: e.problem.category, correct: format.choiceOf(e.problem, decoded[i]) === e.problem.answer }));
  const solved = probs.map((e, i) => solutionRight(tok, format, e.problem, decoded[i]));
  const solutions = solved.some((x) => x !== undefined)
    ? {
        right: multipleChoiceAccuracy(items.flatMap((it, i) => (solved[i] === undefined ? [] : [{ category: it.category, correct: solved[i]! }]))),
        accuracyWhenRight: multipleChoiceAccuracy(items.filter((_, i) => solved[i])),
      }
    : undefined;
  const chance = probs.reduce((a, e) => a + 1 / e.problem.choices.length, 0) / Math.max(1, probs.length);

  const capRows = caps.map((c) => ({ prompt: encodeText(tok, captionParts(c.captions[0])).prompt, image: c.image }));
  const generated = await greedyAnswers(decoder, tok, capRows, { maxNew: opts.maxCaption, ...common });
  const corpus = new Map(caps.map((c, i) => [String(c.imgid), { candidates: tok.decode(generated[i]), references: c.captions }]));
  const m = caps.length ? captionMetrics(corpus) : { bleu4: NaN, ciderD: NaN };
  const samples = probs
    .slice(0, 3)
    .map((e, i) => ({ question: format.parts(e.problem).prompt, generated: decoded[i], answer: format.parts(e.problem).answer }));
  return {
    mc: multipleChoiceAccuracy(items),
    chance,
    captions: { bleu4: m.bleu4, ciderD: m.ciderD, images: caps.length },
    samples,
    ...(solutions && { solutions }),
  };
}
