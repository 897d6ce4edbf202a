/**
 * One fine-tuning step of the tiny-vqa fusions (the main job's: B 32, T 48, the backbones
 * frozen) with the frozen weights stored as f32 and as f16, and with f32 weights and every
 * layer recomputed in the backward, in the same process and on the same device, steps
 * interleaved so that load on the host falls on all alike: median ms/step, the ratios to
 * the f32 step, and the device memory of each plan.
 */
import { elaborate } from "../compiler/elaborate.ts";
import { memoryReport } from "../lowering/memory-report.ts";
import type { WeightStorage } from "../lowering/plan.ts";
import { tensor } from "../compiler/tensor.ts";
import { buildTrainGraph, type TrainGraph } from "../compiler/train-graph.ts";
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
  console.log(
    "| model | ms/step: f32 weights | f16 weights | f32, layers recomputed | f16 / f32 | recomputed / f32 | device memory (MiB): f32 | f16 | recomputed |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const name of MODELS) {
    const model = elaborate(loadProgram("models/tiny-vqa.dehvf"), name, { training: true });
    const kept = buildTrainGraph(model);
    const recomputed = buildTrainGraph(model, undefined, { recompute: true });
    const params = initAllParams(model, 0);
    const batch = syntheticInputs(kept.model, 0, DIMS);
    batch.set("loss_mask", tensor([DIMS.B, DIMS.T], new Array(DIMS.B * DIMS.T).fill(1)));
    const variants: { graph: TrainGraph; weights: WeightStorage; trainer?: Trainer; times: number[] }[] = [
      { graph: kept, weights: "f32", times: [] },
      { graph: kept, weights: "f16", times: [] },
      { graph: recomputed, weights: "f32", times: [] },
    ];
    for (const v of variants) v.trainer = await Trainer.forGraph(gpu, v.graph, DIMS, params, { weights: v.weights });
    for (let s = 1; s <= steps + 2; s++)
      for (const v of variants) {
        const t0 = performance.now();
        await v.trainer!.step(batch, s, 1e-3);
        // the first two steps of each compile and warm the driver
        if (s > 2) v.times.push(performance.now() - t0);
      }
    const ms = variants.map((v) => median(v.times));
    const mem = variants.map((v) => mib(memoryReport(v.trainer!.plan, v.graph.model).deviceBytes));
    console.log(
      `| ${name} | ${ms.map((x) => x.toFixed(1)).join(" | ")} | ${(ms[1] / ms[0]).toFixed(2)} | ${(ms[2] / ms[0]).toFixed(2)} | ${mem.join(" | ")} |`,
    );
    for (const v of variants) v.trainer!.destroy();
  }
  console.log(`# load ${loadAverage()}`);
  gpu.destroy();
}
