import type { WeightStorage } from "../lowering/plan.ts";
import type * as A from "../grammar/ast.ts";
import { DehvfError, type Diagnostic, didYouMean } from "../grammar/diagnostics.ts";
import type { Program } from "../grammar/modules.ts";
import { TASKS, type Task } from "../data/examples.ts";
import { promptProblem } from "../data/prompts.ts";
import { QUESTION_TYPES, type QuestionType } from "../data/scienceqa.ts";

/** One `train NAME { ... }` section, checked: what to train, on which data, how long. */
export interface StageConfig {
  readonly name: string;
  /** the model it trains; undefined: the model picked on the command line (the fine-tuning stage) */
  readonly model?: string;
  readonly task: Task;
  readonly steps: number;
  readonly batch: number;
  readonly lr: number;
  readonly warmup: number;
  readonly weightDecay: number;
  readonly clip: number;
  /** stages whose final weights initialise this one (by parameter name) */
  readonly backbones: readonly string[];
  /** run a held-out evaluation every this many steps (0: only at the end) */
  readonly evalEvery: number;
  readonly checkpointEvery: number;
  readonly seed: number;
  /** how problems become text (data/prompts.ts): a ScienceQA format name or a template; undefined: "QCM-A" */
  readonly prompt?: string;
  /** the answer template that goes with a template `prompt`; undefined: "The answer is {letter}." */
  readonly answer?: string;
  /** task "text": which tokens the loss covers: "all" (undefined) or "answer" (each row's answer, rows weighted equally) */
  readonly loss?: "all" | "answer";
  /** task "text": also each question without its context, its solution given, the loss on the answer after it (train/tasks.ts solutionGivenTexts) */
  readonly solutionGiven?: boolean;
  /** task "text": how many times each listed question type's texts appear in the training mix (`oversample = ["count" * 4]`); the others once */
  readonly oversample?: Readonly<Partial<Record<QuestionType, number>>>;
  /** recompute each repeated block in the backward instead of keeping its activations (compiler/recompute.ts) */
  readonly recompute?: boolean;
  /** how frozen weights are stored on the device while training and evaluating (lowering/plan.ts); undefined: f32 */
  readonly weights?: WeightStorage;
  readonly span: A.TrainDecl["span"];
}

const DEFAULTS = { steps: 300, batch: 32, lr: 1e-3, warmup: 0, weight_decay: 0.01, clip: 1, eval_every: 0, checkpoint_every: 100, seed: 0 };
const KEYS = [
  "model",
  "task",
  "backbones",
  "steps",
  "batch",
  "lr",
  "warmup",
  "weight_decay",
  "clip",
  "eval_every",
  "checkpoint_every",
  "seed",
  "prompt",
  "answer",
  "loss",
  "solution_given",
  "oversample",
  "recompute",
  "weights",
] as const;

function fail(message: string, span: A.Expr["span"] | undefined, hint?: string): never {
  const d: Diagnostic = { phase: "input", message, span, hint };
  throw new DehvfError([d]);
}

function number(e: A.Expr, key: string, opts: { int?: boolean; min?: number }): number {
  const v = e.kind === "number" ? e.value : e.kind === "unary" && e.op === "-" && e.operand.kind === "number" ? -e.operand.value : undefined;
  if (v === undefined) fail(`\`${key}\` must be a number`, e.span);
  if (opts.int && !Number.isInteger(v)) fail(`\`${key}\` must be a whole number, got ${v}`, e.span);
  if (opts.min !== undefined && v < opts.min) fail(`\`${key}\` must be at least ${opts.min}, got ${v}`, e.span);
  return v;
}

function name(e: A.Expr, key: string): string {
  if (e.kind === "name") return e.name;
  if (e.kind === "string") return e.value;
  return fail(`\`${key}\` must be a name`, e.span);
}

/** `oversample = ["count" * 4, …]`: each question type at most once, each times a whole number ≥ 1. */
function oversampling(e: A.Expr): Partial<Record<QuestionType, number>> {
  const usage = `\`oversample\` is a list of question types, each times how often its texts appear, e.g. ["count" * 4]`;
  if (e.kind !== "list" || e.items.length === 0) fail(usage, e.span);
  const out: Partial<Record<QuestionType, number>> = {};
  for (const item of e.items) {
    if (item.kind !== "binary" || item.op !== "*") fail(usage, item.span);
    const type = item.left.kind === "string" ? item.left.value : item.left.kind === "name" ? item.left.name : undefined;
    if (type === undefined) fail(usage, item.left.span);
    if (!(QUESTION_TYPES as readonly string[]).includes(type))
      fail(`unknown question type "${type}" in \`oversample\``, item.left.span, didYouMean(type, QUESTION_TYPES) ?? `types: ${QUESTION_TYPES.join(", ")}`);
    if (type in out) fail(`"${type}" is listed twice in \`oversample\``, item.left.span);
    out[type as QuestionType] = number(item.right, "oversample", { int: true, min: 1 });
  }
  return out;
}

/** The train sections of the entry file, in order, with every key checked against the program. */
export function trainStages(program: Program): StageConfig[] {
  try {
    return checkedSections(program);
  } catch (e) {
    // so the error shows file:line:col and the line, as the parser's and linker's do
    if (e instanceof DehvfError) e.withSources(program.sources);
    throw e;
  }
}

function checkedSections(program: Program): StageConfig[] {
  const sections = program.entry.train;
  const names = sections.map((s) => s.name?.name ?? "train");
  const stages: StageConfig[] = [];
  sections.forEach((sec, i) => {
    const seen = new Map<string, A.Expr>();
    for (const e of sec.entries) {
      const key = e.key.name;
      if (!(KEYS as readonly string[]).includes(key))
        fail(`unknown key \`${key}\` in train section \`${names[i]}\``, e.key.span, didYouMean(key, KEYS) ?? `keys: ${KEYS.join(", ")}`);
      if (seen.has(key)) fail(`\`${key}\` is set twice in train section \`${names[i]}\``, e.key.span);
      seen.set(key, e.value);
    }
    const get = <K extends keyof typeof DEFAULTS>(k: K, opts: { int?: boolean; min?: number } = {}) =>
      seen.has(k) ? number(seen.get(k)!, k, opts) : DEFAULTS[k];
    const model = seen.has("model") ? name(seen.get("model")!, "model") : undefined;
    if (model !== undefined && !program.decls.has(model))
      fail(`train section \`${names[i]}\`: no model named \`${model}\``, seen.get("model")!.span, didYouMean(model, [...program.decls.keys()]));
    const taskExpr = seen.get("task");
    if (!taskExpr) fail(`train section \`${names[i]}\` needs a \`task\` (${TASKS.join(", ")})`, sec.span);
    const task = name(taskExpr, "task");
    if (!(TASKS as readonly string[]).includes(task)) fail(`unknown task \`${task}\``, taskExpr.span, `tasks: ${TASKS.join(", ")}`);
    const bb = seen.get("backbones");
    const backbones = !bb ? [] : bb.kind === "list" ? bb.items.map((x) => name(x, "backbones")) : [name(bb, "backbones")];
    for (const b of backbones) {
      const at = names.indexOf(b);
      if (at < 0) fail(`train section \`${names[i]}\`: no stage named \`${b}\``, bb!.span, didYouMean(b, names));
      if (at >= i) fail(`train section \`${names[i]}\` starts from \`${b}\`, which comes later in the file`, bb!.span);
    }
    const text = (key: "prompt" | "answer" | "loss") => {
      const e = seen.get(key);
      if (!e) return undefined;
      if (e.kind !== "string") fail(`\`${key}\` must be a string`, e.span);
      if (task === "classify") fail(`\`${key}\` applies to the "text" and "vqa" tasks; train section \`${names[i]}\` classifies`, e.span);
      return e.value;
    };
    const [prompt, answer, loss] = [text("prompt"), text("answer"), text("loss")];
    if (loss !== undefined && (task !== "text" || (loss !== "all" && loss !== "answer")))
      fail(
        task !== "text" ? `\`loss\` applies to the "text" task (the others train on the answer)` : `\`loss\` is "all" or "answer", got "${loss}"`,
        seen.get("loss")!.span,
      );
    const givenExpr = seen.get("solution_given");
    if (givenExpr && givenExpr.kind !== "bool") fail("`solution_given` is true or false", givenExpr.span);
    if (givenExpr && task !== "text") fail(`\`solution_given\` applies to the "text" task`, givenExpr.span);
    const given = givenExpr?.kind === "bool" && givenExpr.value;
    const oversampleExpr = seen.get("oversample");
    if (oversampleExpr && task !== "text") fail(`\`oversample\` applies to the "text" task`, oversampleExpr.span);
    const oversample = oversampleExpr && oversampling(oversampleExpr);
    const recomputeExpr = seen.get("recompute");
    if (recomputeExpr && recomputeExpr.kind !== "bool") fail("`recompute` is true or false", recomputeExpr.span);
    const recompute = recomputeExpr?.kind === "bool" && recomputeExpr.value;
    const weightsExpr = seen.get("weights");
    const weights = weightsExpr ? name(weightsExpr, "weights") : undefined;
    if (weights !== undefined && weights !== "f16" && weights !== "f32") fail(`\`weights\` is "f16" or "f32", got "${weights}"`, weightsExpr!.span);
    const promptIssue = prompt === undefined && answer === undefined ? undefined : promptProblem(prompt ?? "QCM-A", answer);
    if (promptIssue) fail(promptIssue.message, (seen.get(promptIssue.key) ?? seen.get("answer"))!.span);
    stages.push({
      name: names[i],
      model,
      task: task as Task,
      steps: get("steps", { int: true, min: 1 }),
      batch: get("batch", { int: true, min: 1 }),
      lr: get("lr", { min: 0 }),
      warmup: get("warmup", { int: true, min: 0 }),
      weightDecay: get("weight_decay", { min: 0 }),
      clip: get("clip", { min: 0 }),
      backbones,
      evalEvery: get("eval_every", { int: true, min: 0 }),
      checkpointEvery: get("checkpoint_every", { int: true, min: 1 }),
      seed: get("seed", { int: true, min: 0 }),
      ...(prompt !== undefined && { prompt }),
      ...(answer !== undefined && { answer }),
      ...(loss !== undefined && { loss: loss as "all" | "answer" }),
      ...(given && { solutionGiven: true }),
      ...(oversample && { oversample }),
      ...(recompute && { recompute: true }),
      ...(weights !== undefined && { weights: weights as WeightStorage }),
      span: sec.span,
    });
  });
  if (stages.filter((s) => s.model === undefined).length > 1)
    fail(`more than one train section has no \`model\`: only the fine-tuning stage may leave it out`, sections[0].span);
  return stages;
}

/** The stages a run of `model` goes through: its backbones' stages first (recursively), then its own. */
export function stagesFor(all: readonly StageConfig[], model: string): StageConfig[] {
  // the last section that names the model: a later one may go on from an earlier (`backbones`)
  const own = [...all].reverse().find((s) => s.model === model) ?? all.find((s) => s.model === undefined);
  if (!own)
    throw new DehvfError([
      {
        phase: "input",
        message: `no train section trains \`${model}\``,
        hint: "add `train NAME { model = " + model + "; task = ... }` or one without `model`",
      },
    ]);
  const order: StageConfig[] = [];
  const visit = (s: StageConfig) => {
    if (order.includes(s)) return;
    for (const b of s.backbones) visit(all.find((x) => x.name === b)!);
    order.push(s);
  };
  visit(own);
  return order;
}
