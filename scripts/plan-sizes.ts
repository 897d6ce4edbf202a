// Builds the forward, training-step and decode plans of the paper-size models with the
// binding size limit lifted (so they plan whatever the device) and prints, per plan, how
// long planning took, its kernels and the device memory by category. The README's table.
//   npx tsx scripts/plan-sizes.ts [--weights f16] [--recompute] [FILE…]   (default: both models/clip-l14-llama7b-*.dehvf, f32)
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { memoryReport } from "../lowering/memory-report.ts";
import { buildPlan, type Plan, type PlanTarget, WEBGPU_DEFAULT_TARGET, type WeightStorage } from "../lowering/plan.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";

/** WebGPU's default limits, except the binding and buffer sizes. */
const TARGET: PlanTarget = { ...WEBGPU_DEFAULT_TARGET, maxBindingBytes: 2 ** 40, maxBufferBytes: 2 ** 40, shaderF16: true };
const args = process.argv.slice(2);
const at = args.indexOf("--weights");
const weights: WeightStorage = at >= 0 && args[at + 1] === "f16" ? "f16" : "f32";
if (at >= 0) args.splice(at, 2);
const recompute = args.includes("--recompute");
if (recompute) args.splice(args.indexOf("--recompute"), 1);
const files = args.length ? args : ["models/clip-l14-llama7b-dehvf.dehvf", "models/clip-l14-llama7b-memvp.dehvf"];
const gib = (b: number) => (b / 2 ** 30).toFixed(2);

const modes: Record<string, (file: string) => { plan: Plan; model: CompiledModel }> = {
  "forward B=4 T=512": (file) => {
    const model = elaborate(loadProgram(file));
    return { plan: buildPlan(model, { B: 4, T: 512 }, TARGET, undefined, { weights }), model };
  },
  "training step B=4 T=512": (file) => {
    const step = buildTrainGraph(elaborate(loadProgram(file), undefined, { training: true }), undefined, { recompute });
    return {
      plan: buildPlan(step.model, { B: 4, T: 512 }, TARGET, undefined, { weights, mutableParams: new Set(step.updates.map((u) => u.to)) }),
      model: step.model,
    };
  },
  "decode B=4 C=576": (file) => {
    const model = generationModels(loadProgram(file)).decode;
    return { plan: buildPlan(model, { B: 4, C: 576 }, TARGET, undefined, { weights }), model };
  },
};

for (const file of files)
  for (const [mode, build] of Object.entries(modes)) {
    const t0 = performance.now();
    const { plan, model } = build(file);
    const seconds = (performance.now() - t0) / 1000;
    const r = memoryReport(plan, model);
    console.log(
      `${file} ${mode}: planned in ${seconds.toFixed(1)} s, ${plan.kernels.length} kernels, device ${gib(r.deviceBytes)} GiB (${r.device.map((c) => `${c.name.split(" (")[0]} ${gib(c.bytes)}`).join(", ")}); host RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB so far`,
    );
  }
