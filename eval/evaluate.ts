import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan } from "../compiler/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { encodeText, IMAGE_SHAPE, lmBatch } from "../data/batches.ts";
import { captionParts } from "../data/captions.ts";
import type { LoadedSplit } from "../data/loader.ts";
import { LETTERS, promptParts } from "../data/scienceqa.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import type { Gpu } from "../runtime/device.ts";
import { type CompileHook, createExecutor, type PlanExecutor } from "../runtime/executor.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { labelledImages } from "../train/tasks.ts";
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

  static async create(gpu: Gpu, model: CompiledModel, dims: Readonly<Record<string, number>>, params: ReadonlyMap<string, Tensor>, compiling?: CompileHook): Promise<Predictor> {
    const ex = await createExecutor(gpu, buildPlan(model, dims, planTarget(gpu)), model.program.sources, compiling);
    ex.writeParams(params);
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
function* batches(n: number, B: number): Generator<{ idx: number[]; real: number }> {
  for (let s = 0; s < n; s += B) {
    const idx = Array.from({ length: B }, (_, i) => (s + i < n ? s + i : 0));
    yield { idx, real: Math.min(B, n - s) };
  }
}

/** Per-quadrant classification accuracy of a [B, 4, 10] classifier. */
export async function evalClassifier(p: Predictor, split: LoadedSplit, limit = Infinity, tally?: Tally): Promise<{ accuracy: number; items: number }> {
  const items = labelledImages(split).slice(0, limit);
  if (tally) tally.total += items.length;
  const B = p.dims.B;
  let correct = 0;
  for (const { idx, real } of batches(items.length, B)) {
    const image = new Float32Array(B * items[0].image.length);
    idx.forEach((i, b) => image.set(items[i].image, b * items[0].image.length));
    const out = await p.forward(new Map([["image", tensor([B, ...IMAGE_SHAPE], image)]]));
    for (let b = 0; b < real; b++)
      for (let q = 0; q < 4; q++) {
        const row = out.data.subarray((b * 4 + q) * 10, (b * 4 + q + 1) * 10);
        if (row.indexOf(Math.max(...row)) === items[idx[b]].classes[q]) correct++;
      }
    if (tally) tally.done += real;
  }
  return { accuracy: correct / (items.length * 4), items: items.length };
}

/**
 * Greedy decoding at a fixed T: row b holds <bos> prompt and what was generated so far;
 * the logits at its last position pick the next token. A causal model's logits there do
 * not depend on the padding after it, so one compiled plan serves every step.
 */
export async function greedyDecode(p: Predictor, tok: Tokenizer, rows: readonly { prompt: number[]; image: Float32Array }[], maxNew: number, stopAt?: ReadonlySet<number>, tally?: Tally): Promise<number[][]> {
  const { B, T } = p.dims;
  const out: number[][] = [];
  for (const { idx, real } of batches(rows.length, B)) {
    const examples = idx.map((i) => ({ prompt: rows[i].prompt, answer: [] as number[], image: rows[i].image }));
    const base = lmBatch(tok, examples, examples.map((_, i) => i), T);
    const tokens = Int32Array.from(base.tokens);
    const len = examples.map((e) => e.prompt.length + 1);
    const gen: number[][] = examples.map(() => []);
    const done = examples.map((_, b) => b >= real);
    for (let s = 0; s < maxNew && done.some((d) => !d); s++) {
      const feed = new Map([
        ["image", tensor([B, ...IMAGE_SHAPE], base.image)],
        ["tokens", tensor([B, T], tokens)],
        ["prompt_mask", tensor([B, T], base.promptMask)],
      ]);
      const logits = await p.forward(feed);
      const [, S, V] = logits.shape;
      const offset = S - T; // a concat model's output also covers its visual prefix
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        const at = (b * S + offset + len[b] - 1) * V;
        let best = 0;
        for (let v = 1; v < V; v++) if (logits.data[at + v] > logits.data[at + best]) best = v;
        if (best === tok.special.eos || len[b] >= T) done[b] = true;
        else {
          tokens[b * T + len[b]] = best;
          gen[b].push(best);
          len[b]++;
          if (stopAt?.has(best)) done[b] = true;
        }
      }
    }
    out.push(...gen.slice(0, real));
    if (tally) tally.done += real;
  }
  return out;
}

export interface VqaReport {
  readonly mc: MultipleChoiceAccuracy;
  readonly chance: number;
  readonly captions: { bleu4: number; ciderD: number; images: number };
  readonly samples: readonly { question: string; generated: string; answer: string }[];
}

/** The letter a generated answer names ("The answer is B."), if any. */
export function answerLetter(text: string): string | undefined {
  return /answer is \(?([a-j])\b/i.exec(text)?.[1]?.toUpperCase();
}

/** Multiple-choice accuracy per question type (ScienceQA-style) and caption BLEU-4 / CIDEr-D, all by greedy decoding. */
export async function evalVqa(p: Predictor, tok: Tokenizer, split: LoadedSplit, opts: { problems?: number; captionImages?: number; tally?: Tally } = {}): Promise<VqaReport> {
  const probs = split.vqa.slice(0, opts.problems ?? Infinity);
  const caps = split.captions.slice(0, opts.captionImages ?? Infinity);
  if (opts.tally) opts.tally.total += probs.length + caps.length;
  const rows = probs.map((e) => ({ prompt: encodeText(tok, promptParts(e.problem)).prompt, image: e.image }));
  // "The answer is X": decoding stops at the option letter, which is all that is scored
  const letters = new Set([...LETTERS].map((l) => tok.id(l)).filter((id) => id !== tok.special.unk));
  const answers = await greedyDecode(p, tok, rows, 6, letters, opts.tally);
  const items = probs.map((e, i) => ({ category: e.problem.category, correct: answerLetter(tok.decode(answers[i])) === LETTERS[e.problem.answer] }));
  const chance = probs.reduce((a, e) => a + 1 / e.problem.choices.length, 0) / Math.max(1, probs.length);

  const capRows = caps.map((c) => ({ prompt: encodeText(tok, captionParts(c.captions[0])).prompt, image: c.image }));
  const generated = await greedyDecode(p, tok, capRows, p.dims.T, undefined, opts.tally);
  const corpus = new Map(caps.map((c, i) => [String(c.imgid), { candidates: tok.decode(generated[i]), references: c.captions }]));
  const m = caps.length ? captionMetrics(corpus) : { bleu4: NaN, ciderD: NaN };
  const samples = probs.slice(0, 3).map((e, i) => ({ question: promptParts(e.problem).prompt, generated: tok.decode(answers[i]), answer: promptParts(e.problem).answer }));
  return { mc: multipleChoiceAccuracy(items), chance, captions: { bleu4: m.bleu4, ciderD: m.ciderD, images: caps.length }, samples };
}
