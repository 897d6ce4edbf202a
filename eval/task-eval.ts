import { CONTEXT_DIM } from "../compiler/decoding.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import type { WeightStorage } from "../lowering/plan.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { CLASS_NAMES } from "../data/fashion-mnist.ts";
import type { LoadedDataset, LoadedSplit } from "../data/loader.ts";
import { during } from "../io/progress.ts";
import { DeviceDecoder } from "../runtime/decoder.ts";
import type { Gpu } from "../runtime/device.ts";
import { announcedCompile } from "../runtime/compile-progress.ts";
import type { CompileHook } from "../runtime/executor.ts";
import type { Task } from "../data/examples.ts";
import { groundedExamples, seqLength, trainingTexts } from "../data/examples.ts";
import { evalClassifier, evalVqa, Predictor, type Tally } from "./evaluate.ts";
import type { MultipleChoiceAccuracy } from "./metrics.ts";

/** Accuracy per question type, as the reports write it. */
const byType = (a: MultipleChoiceAccuracy) => Object.fromEntries(Object.entries(a.perCategory).map(([k, c]) => [k, c.accuracy]));

/** Rows per evaluation run. */
export const EVAL_BATCH = 64;

export interface EvalSizes {
  readonly problems: number;
  readonly captions: number;
}

/**
 * What evaluates a stage's task on the device: the forward for classification; the
 * generation plans (prefill + decode with a KV cache, the same as `dehvf generate`) for
 * answers and captions. Kept across periodic evaluations; `update` brings in new weights.
 */
export class EvalModel {
  private constructor(
    readonly task: Task,
    private readonly predictor: Predictor | undefined,
    private readonly decoder: DeviceDecoder | undefined,
    private readonly takesPromptMask: boolean,
    /** the longest caption a row may decode: the task's sequence length */
    private readonly maxCaption: number,
  ) {}

  /** `weights`: how frozen weights are stored on the device (lowering/plan.ts PlanOptions.weights) */
  static async create(
    say: (line: string) => void,
    gpu: Gpu,
    model: CompiledModel,
    task: Task,
    data: LoadedDataset,
    params: ReadonlyMap<string, Tensor>,
    batch = EVAL_BATCH,
    weights?: WeightStorage,
  ): Promise<EvalModel> {
    const compiling: CompileHook = announcedCompile(say, (n) => `compiling the evaluation plan's ${n} pipelines`);
    if (task === "classify") return new EvalModel(task, await Predictor.create(gpu, model, { B: batch }, params, compiling, weights), undefined, false, 0);
    const models = generationModels(model.program, model.name);
    // room for the longest prompt and reference of every loaded split, as in training (the
    // language model is evaluated on the questions with the picture described in words)
    const examples = (s: LoadedSplit) => (task === "text" ? trainingTexts(data.tokenizer!, s, data.format) : groundedExamples(data.tokenizer!, s, data.format));
    const T = Math.max(...Object.values(data.splits).map((s) => seqLength(examples(s))));
    const context = T + models.prefixLength({ [models.batchDim]: batch, [models.seqDim]: T, [CONTEXT_DIM]: T });
    // checkpoint weights (`from "..."`) stream into the decoder as float32 (runtime/param-upload.ts)
    const decoder = await DeviceDecoder.create(gpu, models, params, { batch, context, weights }, compiling);
    return new EvalModel(
      task,
      undefined,
      decoder,
      models.prefill.inputs.some((i) => i.name === "prompt_mask"),
      T,
    );
  }

  /** New values for some parameters (the fine-tuned ones between evaluations). */
  async update(params: ReadonlyMap<string, Tensor>): Promise<void> {
    this.predictor?.update(params);
    await this.decoder?.update(params);
  }

  /** Held-out evaluation on one split: the record for the metrics log, eval.json and the terminal. */
  async evaluate(data: LoadedDataset, split: "val" | "test", sizes: EvalSizes, tally?: Tally): Promise<Record<string, unknown>> {
    const held = data.splits[split];
    if (!held) throw new Error(`the dataset has no ${split} split loaded`);
    if (this.predictor) {
      const r = await evalClassifier(this.predictor, held, sizes.problems, tally);
      const fromItems = byType(r.answersFromItems);
      // the questions answered from the predicted classes: how far this ViT's reading of the items carries a fusion
      return {
        split,
        item_accuracy: r.accuracy,
        items: r.items * 4,
        chance: 1 / CLASS_NAMES.length,
        ...(Object.keys(fromItems).length ? { answers_from_items: fromItems } : {}),
      };
    }
    if (!this.decoder) return { split };
    const described = this.task === "text";
    const r = await evalVqa(this.decoder, data.tokenizer!, held, {
      problems: sizes.problems,
      captionImages: described ? 0 : sizes.captions,
      tally,
      takesPromptMask: this.takesPromptMask,
      maxCaption: this.maxCaption,
      format: data.format,
      described,
    });
    const perType = byType(r.mc);
    const solutions = r.solutions && { solution_right: byType(r.solutions.right), accuracy_when_solution_right: byType(r.solutions.accuracyWhenRight) };
    const captions = described ? {} : { bleu4: r.captions.bleu4, cider_d: r.captions.ciderD, caption_images: r.captions.images };
    return {
      split,
      ...(described ? { given: "the picture described in words" } : {}),
      accuracy: r.mc.overall.accuracy,
      questions: r.mc.overall.total,
      chance: r.chance,
      per_type: perType,
      ...solutions,
      ...captions,
      samples: r.samples,
    };
  }

  /** `evaluate`, with a line saying what it evaluates and, every few seconds, how far it is. */
  evaluateSaying(say: (line: string) => void, data: LoadedDataset, split: "val" | "test", sizes: EvalSizes): Promise<Record<string, unknown>> {
    const tally: Tally = { done: 0, total: 0 };
    return during(say, `evaluating on ${evaluationSize(this.task, sizes)} (${split} split)`, () => this.evaluate(data, split, sizes, tally), {
      status: () => (tally.total ? `${tally.done.toLocaleString("en-US")} of ${tally.total.toLocaleString("en-US")} decoded` : undefined),
    });
  }

  destroy(): void {
    this.predictor?.destroy();
    this.decoder?.destroy();
  }
}

/** What an evaluation of `task` decodes, in words ("2,000 held-out questions and 100 caption images"). */
export function evaluationSize(task: Task, sizes: EvalSizes): string {
  const n = (x: number) => x.toLocaleString("en-US");
  if (task === "classify") return `${n(sizes.problems)} held-out images`;
  if (task === "text") return `${n(sizes.problems)} held-out questions, the picture described in words`;
  return `${n(sizes.problems)} held-out questions${sizes.captions ? ` and ${n(sizes.captions)} caption images` : ""}`;
}

const fmt = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : String(x));
// a type with nothing to measure (no right solution) is null in eval.json
const pct = (x: unknown) => (Number.isFinite(x) ? `${(100 * (x as number)).toFixed(1)}%` : "-");
/** `presence 92.2%, count 84.4%`: a per-type record of eval.json */
const perTypeText = (x: unknown) =>
  Object.entries(x as Record<string, number>)
    .map(([k, v]) => `${k} ${pct(v)}`)
    .join(", ");

export function describeEval(e: Record<string, unknown>): string {
  if ("item_accuracy" in e) {
    const fromItems = e.answers_from_items ? `; questions answered from the predicted items: ${perTypeText(e.answers_from_items)}` : "";
    return `${e.split} item accuracy ${pct(e.item_accuracy)} (chance ${pct(e.chance)})${fromItems}`;
  }
  if (!("accuracy" in e)) return `${e.split}: no held-out metric for this task`;
  const given = e.given ? ` given ${e.given}` : "";
  const per = perTypeText(e.per_type);
  // the quick periodic evaluations decode no captions: say nothing rather than NaN
  const captions = e.caption_images ? `; captions BLEU-4 ${fmt(e.bleu4 as number, 3)} CIDEr-D ${fmt(e.cider_d as number, 3)}` : "";
  return `${e.split} accuracy${given} ${pct(e.accuracy)} of ${e.questions} (chance ${pct(e.chance)}; ${per})${captions}`;
}

/** The solution line of a final report (answers that start with the solution), or undefined. */
export function describeSolutions(e: Record<string, unknown>): string | undefined {
  if (!e.solution_right) return undefined;
  return `solution as the reference's: ${perTypeText(e.solution_right)}; accuracy where it is: ${perTypeText(e.accuracy_when_solution_right)}`;
}
