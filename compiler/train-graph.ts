import { backprop } from "./autodiff.ts";
import { dimEq, dimSub, type Shape, shapeStr } from "./dims.ts";
import { DROPOUT_SEED, dropoutSeed } from "./dropout.ts";
import type { CompiledModel, InputInfo } from "./elaborate.ts";
import { topoOrder } from "./graph.ts";
import type { DType, Node } from "./ir.ts";
import { recomputeLayers } from "./recompute.ts";
import { TensorOps } from "./tensor-ops.ts";

/** AdamW with decoupled weight decay (matrices only), optional global-norm clipping. */
export interface OptimizerConfig {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** clip the global gradient norm to this (0: off) */
  readonly clip: number;
}

export const DEFAULT_OPTIMIZER: OptimizerConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, clip: 1 };

/** A parameter the step updates, with the optimizer state it keeps on the device. */
export interface TrainedParam {
  readonly name: string;
  readonly shape: readonly number[];
  readonly decay: boolean;
  /** state parameters (AdamW moments), zero at the start */
  readonly m: string;
  readonly v: string;
}

/**
 * One training step as a graph: the model's forward, the masked cross-entropy loss, its
 * gradient with respect to the trainable parameters, clipping and the AdamW update.
 * `model` is the step as a CompiledModel (extra inputs, outputs = loss, grad norm, norm of the new weights and the
 * new values), so it plans and runs like any forward; after each run the executor copies
 * each `updates[i].from` output over the `to` parameter, which keeps parameters and
 * optimizer state on the device.
 */
export interface TrainGraph {
  readonly model: CompiledModel;
  readonly trained: readonly TrainedParam[];
  readonly updates: readonly { readonly from: string; readonly to: string }[];
  /** scalar inputs fed per step (stepInputs): learning rate, AdamW bias corrections and, with dropout, its seed */
  readonly scalars: readonly string[];
  readonly opt: OptimizerConfig;
}

export const LOSS_OUTPUT = "loss";
export const GRAD_NORM_OUTPUT = "grad_norm";
/** the norm of the updated trainable weights: not finite exactly when a weight stopped being finite, one reduction per step */
export const PARAM_NORM_OUTPUT = "param_norm";

function sumAll(t: TensorOps, x: Node): Node {
  let s = x;
  while (s.shape.length) s = t.sum(s, 0);
  return s;
}

/**
 * Mean cross-entropy of `logits` [..., V] against int `targets` [...] over the positions
 * where `mask` is 1, with its gradient in closed form: mask/count · (softmax − onehot).
 * Supplying that gradient directly is the fused softmax-CE backward: no graph through
 * log-sum-exp's max and no second softmax.
 */
export function maskedCrossEntropy(t: TensorOps, logits: Node, targets: Node, mask: Node): { loss: Node; dlogits: Node } {
  const V = logits.shape[logits.shape.length - 1];
  const m = t.max(logits, -1, true);
  const e = t.unary("exp", t.sub(logits, m));
  const se = t.sum(e, -1, true);
  const onehot = t.binary("cmpeq", t.unsqueeze(t.float(targets), -1), t.reshape(t.arange(V), [...targets.shape.map(() => 1), V]));
  const lse = t.add(t.unary("log", se), m);
  const nll = t.sub(t.reshape(lse, targets.shape), t.sum(t.mul(logits, onehot), -1));
  const count = t.binary("max", sumAll(t, mask), t.scalar(1));
  const loss = t.div(sumAll(t, t.mul(nll, mask)), count);
  const weight = t.unsqueeze(t.div(mask, count), -1);
  const dlogits = t.mul(t.sub(t.div(e, se), onehot), weight);
  return { loss, dlogits };
}

function addInput(model: CompiledModel, inputs: InputInfo[], name: string, shape: Shape, dtype: DType): Node {
  if (model.inputs.some((i) => i.name === name))
    throw new Error(`model ${model.name} already has an input named \`${name}\`; the training step needs that name`);
  const node = model.graph.make("input", [], { name, shape, dtype });
  inputs.push({ name, shape, dtype, node });
  return node;
}

/**
 * The logits the loss reads and the target shape. Targets line up with the model's
 * `tokens` input when it has one (the last T positions of the output: a concat model's
 * output also holds its visual prefix), else with the output minus its class axis.
 */
function alignLogits(t: TensorOps, model: CompiledModel, logits: Node): { logits: Node; targetShape: Shape } {
  const tokens = model.inputs.find((i) => i.name === "tokens");
  if (!tokens || logits.shape.length !== tokens.shape.length + 1) return { logits, targetShape: logits.shape.slice(0, -1) };
  const ax = tokens.shape.length - 1;
  const [have, want] = [logits.shape[ax], tokens.shape[ax]];
  if (dimEq(have, want)) return { logits, targetShape: tokens.shape };
  const prefix = dimSub(have, want);
  if (typeof prefix === "number" && prefix < 0) throw new Error(`output ${shapeStr(logits.shape)} is shorter than the tokens ${shapeStr(tokens.shape)}`);
  return { logits: t.slice(logits, ax, prefix, have), targetShape: tokens.shape };
}

export interface TrainGraphOptions {
  /** recompute each repeated block's forward in its backward instead of keeping its values (compiler/recompute.ts) */
  readonly recompute?: boolean;
}

export function buildTrainGraph(model: CompiledModel, opt: OptimizerConfig = DEFAULT_OPTIMIZER, opts: TrainGraphOptions = {}): TrainGraph {
  const g = model.graph;
  const t = new TensorOps(g);
  const out = model.outputs[0];
  if (!out) throw new Error(`model ${model.name} has no output to train on`);
  const inputs = [...model.inputs];
  const { logits, targetShape } = alignLogits(t, model, out.node);
  const targets = addInput(model, inputs, "targets", targetShape, "i32");
  const mask = addInput(model, inputs, "loss_mask", targetShape, "f32");
  const [lr, bc1, bc2] = ["lr", "adam_bc1", "adam_bc2"].map((n) => addInput(model, inputs, n, [], "f32"));

  const params = topoOrder([out.node]).filter((n): n is Node<"param"> => n.op === "param" && (n as Node<"param">).attrs.trainable);
  if (!params.length) throw new Error(`model ${model.name} has no trainable parameter on the path to its output (everything is frozen)`);
  const { loss, dlogits } = maskedCrossEntropy(t, logits, targets, mask);
  const direct = backprop(g, [{ node: logits, grad: dlogits }], params);
  const grads = opts.recompute ? recomputeLayers(g, [logits], direct) : direct;

  const gnorm = t.unary(
    "sqrt",
    grads.map((gr) => sumAll(t, t.mul(gr, gr))).reduce((a, b) => t.add(a, b)),
  );
  // min(1, clip / norm), written with max because the IR has no min
  const scale =
    opt.clip > 0 ? t.unary("neg", t.binary("max", t.scalar(-1), t.unary("neg", t.div(t.scalar(opt.clip), t.add(gnorm, t.scalar(1e-6)))))) : undefined;

  const newValues: { name: string; node: Node }[] = [];
  const trained: TrainedParam[] = [];
  const updates: { from: string; to: string }[] = [];
  const newSquares: Node[] = [];
  params.forEach((p, i) => {
    const name = p.attrs.name;
    const shape = p.shape.map((d) => {
      if (typeof d !== "number") throw new Error(`trainable parameter ${name} has a run-time shape ${shapeStr(p.shape)}`);
      return d;
    });
    const state = (suffix: string) => g.make("param", [], { name: `${name}@${suffix}`, shape: p.shape, init: { kind: "zeros" }, trainable: false });
    const [m, v] = [state("adam_m"), state("adam_v")];
    const gr = scale ? t.mul(grads[i], scale) : grads[i];
    const m1 = t.add(t.mul(m, t.scalar(opt.beta1)), t.mul(gr, t.scalar(1 - opt.beta1)));
    const v1 = t.add(t.mul(v, t.scalar(opt.beta2)), t.mul(t.mul(gr, gr), t.scalar(1 - opt.beta2)));
    const step = t.div(t.mul(m1, bc1), t.add(t.unary("sqrt", t.mul(v1, bc2)), t.scalar(opt.eps)));
    const decay = shape.length >= 2 && opt.weightDecay > 0;
    const delta = decay ? t.add(step, t.mul(p, t.scalar(opt.weightDecay))) : step;
    const p1 = t.sub(p, t.mul(delta, lr));
    for (const [node, to] of [
      [p1, name],
      [m1, m.attrs.name],
      [v1, v.attrs.name],
    ] as const) {
      newValues.push({ name: `new:${to}`, node });
      updates.push({ from: `new:${to}`, to });
    }
    trained.push({ name, shape, decay, m: m.attrs.name, v: v.attrs.name });
    newSquares.push(sumAll(t, t.mul(p1, p1)));
  });
  const pnorm = t.unary(
    "sqrt",
    newSquares.reduce((a, b) => t.add(a, b)),
  );
  const outputs = [{ name: LOSS_OUTPUT, node: loss }, { name: GRAD_NORM_OUTPUT, node: gnorm }, { name: PARAM_NORM_OUTPUT, node: pnorm }, ...newValues];
  const stepModel: CompiledModel = { ...model, name: `${model.name}.train`, inputs, outputs };
  return { model: stepModel, trained, updates, scalars: ["lr", "adam_bc1", "adam_bc2", ...(usesDropout(model) ? [DROPOUT_SEED] : [])], opt };
}

/** Whether the model was elaborated for training with a dropout that drops (it then reads `dropout_seed`). */
export const usesDropout = (model: CompiledModel): boolean => model.inputs.some((i) => i.name === DROPOUT_SEED);

/** The scalar inputs for step `step` (1-based) at learning rate `lr`. */
export function adamScalars(step: number, lr: number, opt: OptimizerConfig = DEFAULT_OPTIMIZER): Record<string, number> {
  return { lr, adam_bc1: 1 / (1 - opt.beta1 ** step), adam_bc2: 1 / (1 - opt.beta2 ** step) };
}

/**
 * Every scalar input of step `step` (1-based) at learning rate `lr` in a run seeded `seed`:
 * AdamW's and, when the model has dropout, that step's `dropout_seed`, a pure function of
 * `seed` and `step` (so a resumed run draws the masks the uninterrupted one drew).
 */
export function stepInputs(graph: TrainGraph, step: number, lr: number, seed: number): Record<string, number> {
  return { ...adamScalars(step, lr, graph.opt), ...(graph.scalars.includes(DROPOUT_SEED) && { [DROPOUT_SEED]: dropoutSeed(seed, step) }) };
}

/** What a checkpoint of this step holds: each trained weight and its two AdamW moments. */
export function trainState(graph: TrainGraph): { name: string; shape: readonly number[] }[] {
  return graph.trained.flatMap((p) => [p.name, p.m, p.v].map((name) => ({ name, shape: p.shape })));
}
