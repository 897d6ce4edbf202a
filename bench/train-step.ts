/**
 * One fine-tuning step of the tiny-vqa fusions (the main job's: B 32, T 48, the backbones
 * frozen) with the frozen weights stored as f32 and as f16, in the same process and on the
 * same device, steps interleaved so that load on the host falls on both alike: median
 * ms/step, the ratio, and the device memory of each plan.
 */
import { elaborate } from "../compiler/elaborate.ts";
import { memoryReport } from "../compiler/memory-report.ts";
import type { WeightStorage } from "../compiler/plan.ts";
import { tensor } from "../compiler/tensor.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { acquireGpu } from "../runtime/device.ts";
import { initAllParams, syntheticInputs } from "../runtime/interp-backend.ts";
import { Trainer } from "../runtime/trainer.ts";
import { median } from "./measure.ts";
import { loadAverage } from "./peers.ts";

const MODELS = ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"];
const DIMS = { B: 32, T: 48 };

export async function main(argv: readonly string[]): Promise<void> {
  const steps = argv.includes("--quick") ? 5 : 15;
  const gpu = await acquireGpu();
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  console.log(`# training step, B ${DIMS.B}, T ${DIMS.T}, ${steps} steps each, interleaved; ${gpu.info.description}; load ${loadAverage()}`);
  if (!gpu.hasF16) {
    console.log("# this adapter has no shader-f16: f16 weights cannot run here");
    gpu.destroy();
    return;
  }
  console.log("| model | f32 weights: ms/step | f16 weights: ms/step | f16 / f32 | device memory f32 → f16 (MiB) |");
  console.log("|---|---|---|---|---|");
  for (const name of MODELS) {
    const model = elaborate(loadProgram("models/tiny-vqa.dehvf"), name, { training: true });
    const graph = buildTrainGraph(model);
    const params = initAllParams(model, 0);
    const batch = syntheticInputs(graph.model, 0, DIMS);
    batch.set("loss_mask", tensor([DIMS.B, DIMS.T], new Array(DIMS.B * DIMS.T).fill(1)));
    const trainers = new Map<WeightStorage, Trainer>();
    for (const w of ["f32", "f16"] as const) trainers.set(w, await Trainer.forGraph(gpu, graph, DIMS, params, { weights: w }));
    const times = new Map<WeightStorage, number[]>([["f32", []], ["f16", []]]);
    for (let s = 1; s <= steps + 2; s++)
      for (const [w, tr] of trainers) {
        const t0 = performance.now();
        await tr.step(batch, s, 1e-3);
        // the first two steps of each compile and warm the driver
        if (s > 2) times.get(w)!.push(performance.now() - t0);
      }
    const [a, b] = [median(times.get("f32")!), median(times.get("f16")!)];
    const mem = (w: WeightStorage) => memoryReport(trainers.get(w)!.plan, graph.model).deviceBytes;
    console.log(`| ${name} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(2)} | ${mib(mem("f32"))} → ${mib(mem("f16"))} |`);
    for (const tr of trainers.values()) tr.destroy();
  }
  console.log(`# load ${loadAverage()}`);
  gpu.destroy();
}
