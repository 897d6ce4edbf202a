import { shapeEval, shapeStr } from "../compiler/dims.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import type { Node } from "../compiler/ir.ts";
import { CLASS_NAMES } from "../data/fashion-mnist.ts";
import type { LoadedDataset } from "../data/loader.ts";
import { DehvfError, type Diagnostic } from "../grammar/diagnostics.ts";
import type { StageConfig } from "./stages.ts";
import { type TaskData, type TaskSettings, taskData } from "./tasks.ts";

/** The inputs compiler/train-graph.ts adds to a model for its training step: a model input of the same name would clash. */
const STEP_INPUTS = ["targets", "loss_mask", "lr", "adam_bc1", "adam_bc2"];
/** Feeds that hold ids (train/tasks.ts): the model must take them as `int`. */
const ID_FEEDS = new Set(["tokens", "targets"]);

const listed = (names: readonly string[]) => names.map((n) => `\`${n}\``).join(", ");
const concrete = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/** How many classes the task's targets range over: the output's last axis must score each. */
function targetClasses(stage: Pick<StageConfig, "task">, data: LoadedDataset): { count: number; what: string } {
  if (stage.task === "classify") return { count: CLASS_NAMES.length, what: `${CLASS_NAMES.length} clothing classes` };
  const tok = data.tokenizer!;
  return { count: tok.size, what: `the ${tok.size} tokens of the ${data.tokenizerDigest ? "model's" : "dataset's"} tokenizer, ${tok.source}` };
}

/**
 * The logits the loss reads must line up with the targets: every axis but the last equal,
 * except that the sequence axis may be longer when the model takes `tokens` (a visual
 * prefix; the step scores the last T positions: compiler/train-graph.ts, alignLogits).
 */
function logitsMismatch(model: CompiledModel, out: Node, logits: readonly number[], targets: readonly number[]): string | undefined {
  if (logits.length !== targets.length + 1)
    return `has ${logits.length} axes; the targets are ${concrete(targets)}, so it needs ${targets.length + 1} ([${[...targets.map(String), "classes"].join(", ")}])`;
  const tokens = model.inputs.find((i) => i.name === "tokens");
  const prefixAxis = tokens && tokens.shape.length === out.shape.length - 1 ? tokens.shape.length - 1 : -1;
  const bad = targets.findIndex((t, ax) => (ax === prefixAxis ? logits[ax] < t : logits[ax] !== t));
  return bad < 0
    ? undefined
    : `has ${logits[bad]} on axis ${bad}, where the targets ${concrete(targets)} need ${prefixAxis === bad ? `at least ${targets[bad]}` : targets[bad]}`;
}

/**
 * Whether `model` can be trained on `stage`'s task with `data`: every input fed by the task
 * at the shape and type it feeds, no input named like the step's own, the output's
 * scores lined up with the targets and covering every class or token, and something
 * trainable on the way to it. Throws a DehvfError at the train section that says what
 * does not fit; call it before anything is compiled or allocated. `task`: the caller's
 * taskData, when it has it already (it tokenizes the whole training split).
 */
export function checkTaskFits(
  model: CompiledModel,
  stage: Pick<StageConfig, "name" | "span"> & TaskSettings,
  data: LoadedDataset,
  task: TaskData = taskData(data, stage),
): void {
  const problems: string[] = [];
  const at = `train section \`${stage.name}\` (task "${stage.task}")`;
  const feed = task.batchAt(0);
  const fed = [...feed.keys()].filter((n) => !STEP_INPUTS.includes(n));
  for (const i of model.inputs) {
    if (STEP_INPUTS.includes(i.name))
      problems.push(`input \`${i.name}\` has a name the training step gives its own inputs (${listed(STEP_INPUTS)}); rename it`);
    else if (!feed.has(i.name)) problems.push(`input \`${i.name}\` is not fed by task "${stage.task}", which feeds ${listed(fed)}`);
    else if ((i.dtype === "i32") !== ID_FEEDS.has(i.name))
      problems.push(`input \`${i.name}\` is ${i.dtype}, but task "${stage.task}" feeds ${ID_FEEDS.has(i.name) ? "ids (declare it `int`)" : "floats"}`);
  }
  const unset = model.symbols.filter((s) => task.dims[s] === undefined);
  if (unset.length)
    problems.push(
      `run-time dimension${unset.length > 1 ? "s" : ""} ${listed(unset)} ${unset.length > 1 ? "have" : "has"} no value in task "${stage.task}", which sets ${listed(Object.keys(task.dims))}`,
    );
  else {
    for (const i of model.inputs.filter((i) => feed.has(i.name) && !STEP_INPUTS.includes(i.name))) {
      const want = shapeEval(i.shape, task.dims);
      const got = feed.get(i.name)!.shape;
      if (want.join() !== got.join())
        problems.push(`input \`${i.name}\` is ${shapeStr(i.shape)} (here ${concrete(want)}), but task "${stage.task}" feeds ${concrete(got)}`);
    }
    problems.push(...outputProblems(model, stage, data, task, feed.get("targets")!.shape));
  }
  if (!problems.length) return;
  const diagnostics = problems.map((p): Diagnostic => ({ phase: "input", message: `model \`${model.name}\` does not fit ${at}: ${p}`, span: stage.span }));
  throw new DehvfError(diagnostics).withSources(model.program.sources);
}

function outputProblems(model: CompiledModel, stage: Pick<StageConfig, "task">, data: LoadedDataset, task: TaskData, targets: readonly number[]): string[] {
  const out = model.outputs[0];
  if (!out) return ["it has no output to train"];
  const problems: string[] = [];
  const named = `output \`${out.name}\` ${shapeStr(out.node.shape)}`;
  if (out.node.dtype !== "f32") problems.push(`${named} is ${out.node.dtype}; the loss needs float scores`);
  const logits = shapeEval(out.node.shape, task.dims);
  const mismatch = logitsMismatch(model, out.node, logits, targets);
  if (mismatch) problems.push(`${named} ${mismatch}`);
  const classes = targetClasses(stage, data);
  if (!mismatch && logits[logits.length - 1] < classes.count)
    problems.push(
      `${named} scores ${logits[logits.length - 1]} classes on its last axis, fewer than the task's targets range over (${classes.what}); make it at least ${classes.count}`,
    );
  const trainable = topoOrder([out.node]).some((n) => n.op === "param" && (n as Node<"param">).attrs.trainable);
  if (!trainable) problems.push(`every parameter on the way to output \`${out.name}\` is frozen: there is nothing to train`);
  return problems;
}
