/**
 * One compiled training step on the device against the same step in the float64
 * interpreter (loss, gradient norm, every updated tensor), shared by the test files that
 * check training plans.
 */
import assert from "node:assert/strict";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { interpret } from "../compiler/interpret.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import type { WeightStorage } from "../lowering/plan.ts";
import { buildTrainGraph, stepInputs, type TrainGraphOptions } from "../compiler/train-graph.ts";
import { roundedToHalf } from "../runtime/half.ts";
import type { Gpu } from "../runtime/device.ts";
import { initAllParams, syntheticInputs } from "../runtime/interp-backend.ts";
import { Trainer } from "../runtime/trainer.ts";

/**
 * Runs step 1 of `model` at `dims` (B = 2, T = 6: the loss mask below) from seeded
 * parameters on `g` and in the interpreter and compares them; `inspect` sees the trainer
 * (its plan) before it is destroyed. `weights` "f16": frozen weights stored as f16; the
 * interpreter then takes them rounded to f16 as well, so the comparison is the kernels'.
 * `graph`: how the step is built (recomputing layers, say).
 */
export async function checkTrainStep(
  g: Gpu,
  model: CompiledModel,
  dims: Readonly<Record<string, number>>,
  inspect?: (trainer: Trainer) => void,
  weights?: WeightStorage,
  graph?: TrainGraphOptions,
): Promise<void> {
  const name = model.name;
  const params = initAllParams(model, 1);
  const trainer = await Trainer.forGraph(g, buildTrainGraph(model, undefined, graph), dims, params, { weights });
  let state: Map<string, Tensor>;
  let r: Awaited<ReturnType<Trainer["step"]>>;
  let want: Tensor[];
  try {
    inspect?.(trainer);
    const inputs = syntheticInputs(trainer.graph.model, 2, dims);
    inputs.set("loss_mask", tensor([2, 6], [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]));
    const ref = new Map(params);
    for (const p of trainer.plan.params) if (p.dtype === "f16") ref.set(p.name, roundedToHalf(params.get(p.name)!));
    for (const p of trainer.graph.trained) for (const s of [p.m, p.v]) ref.set(s, tensor(p.shape));
    const feed = new Map(inputs);
    // the scalars the trainer feeds itself (a run seeded 0): AdamW's and, with dropout, step 1's seed
    for (const [k, v] of Object.entries(stepInputs(trainer.graph, 1, 1e-2, 0))) feed.set(k, tensor([], [v]));
    want = interpret(
      trainer.graph.model.outputs.map((o) => o.node),
      { dims, inputs: feed, params: ref },
    );
    r = await trainer.step(inputs, 1, 1e-2);
    state = await trainer.readState();
  } finally {
    trainer.destroy();
  }
  assert.ok(Math.abs(r.loss - want[0].data[0]) < 1e-4, `${name} loss ${r.loss} vs ${want[0].data[0]}`);
  assert.ok(Math.abs(r.gradNorm - want[1].data[0]) < 1e-3 * Math.max(1, want[1].data[0]), `${name} grad norm ${r.gradNorm} vs ${want[1].data[0]}`);
  assert.ok(Math.abs(r.paramNorm - want[2].data[0]) < 1e-4 * Math.max(1, want[2].data[0]), `${name} param norm ${r.paramNorm} vs ${want[2].data[0]}`);
  trainer.graph.model.outputs.forEach((o, i) => {
    if (!o.name.startsWith("new:")) return;
    const got = state.get(o.name.slice("new:".length))!;
    const w = want[i];
    // Adam divides by sqrt(v): where a gradient is ~0 its f32 sign can flip the step, so
    // compare the moments tightly and the weights to within one step (lr)
    const tol = o.name.includes("@") ? 1e-5 : 1e-2 + 1e-6;
    w.data.forEach((x, j) => {
      if (!(Math.abs(x - got.data[j]) <= tol)) assert.fail(`${name}: ${o.name}[${j}] = ${got.data[j]}, interpreter ${x}`);
    });
  });
}
