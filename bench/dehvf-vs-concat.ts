import type { Gpu } from "../runtime/device.ts";
import { buildPlan } from "../lowering/plan.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { autotuneRequested, devicePlan } from "../runtime/autotune.ts";
import { initAllParams, syntheticInputs } from "../runtime/interp-backend.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { loadBenchModel, median, table, withGpu } from "./measure.ts";

const FILE = "models/bench/dehvf-vs-concat.dehvf";
const REPS = 25;
const WARM = 3;

/**
 * (c) Same backbones, 256 visual tokens: DEHVF keeps the text at T, concat runs the LLM
 * on T + 256. The prediction is the ratio of the plans' FLOPs. The models run in
 * alternation, so a busy spell on the host slows them alike instead of skewing the ratio.
 *
 * A third model bounds what any fusion could reach on this device: the same ViT and LLM
 * at T with no fusion at all. When concat / backbones falls short of its own FLOP ratio,
 * the backbones' kernels run at a lower rate than concat's large LLM matmuls, and no
 * fusion, however cheap, could meet the prediction.
 */
export async function benchDehvfVsConcat(gpu: Gpu, autotune = false): Promise<void> {
  const rows: (string | number)[][] = [
    [
      "T",
      "DEHVF ms",
      "concat ms",
      "measured ratio",
      "FLOP ratio (predicted)",
      "backbones ms",
      "concat / backbones",
      "its FLOP ratio",
      "DEHVF GFLOP",
      "concat GFLOP",
      "kernels",
    ],
  ];
  for (const T of [16, 64]) {
    const dims = { B: 2, T };
    const runs = await Promise.all(
      ["BenchDEHVF", "BenchConcat", "BenchBackbones"].map(async (name) => {
        const model = loadBenchModel(FILE, name);
        const plan = await devicePlan(gpu, (matmulTuning) => buildPlan(model, dims, planTarget(gpu), undefined, { matmulTuning }), autotune);
        const ex = await PlanExecutor.create(gpu, plan, model.program.sources);
        ex.writeParams(initAllParams(model, 0));
        return { plan, ex, inputs: syntheticInputs(model, 0, dims), times: [] as number[] };
      }),
    );
    for (let i = 0; i < WARM + REPS; i++)
      for (const r of runs) {
        const t0 = performance.now();
        await r.ex.run(r.inputs);
        if (i >= WARM) r.times.push(performance.now() - t0);
      }
    for (const r of runs) r.ex.destroy();
    const [d, c, b] = runs.map((r) => ({
      ms: median(r.times),
      times: r.times,
      flops: r.plan.kernels.reduce((a, k) => a + k.flops, 0),
      kernels: r.plan.kernels.length,
    }));
    const ratio = (x: number, y: number) => `${(x / y).toFixed(2)}x`;
    // each round's own ratio, then their median: neighbours in time share the host's mood
    const measured = (x: typeof c, y: typeof d) => ratio(median(x.times.map((t, i) => t / y.times[i])), 1);
    rows.push([
      T,
      d.ms.toFixed(1),
      c.ms.toFixed(1),
      measured(c, d),
      ratio(c.flops, d.flops),
      b.ms.toFixed(1),
      measured(c, b),
      ratio(c.flops, b.flops),
      (d.flops / 1e9).toFixed(3),
      (c.flops / 1e9).toFixed(3),
      `${d.kernels} / ${c.kernels}`,
    ]);
  }
  console.log(`\n(c) DEHVF vs concat (B=2, 256 visual tokens, same backbones; ${REPS} alternating runs each, medians; ratios are the median of each round's ratio${autotune ? "; matmuls autotuned" : ""})
    backbones: the same ViT and LLM at T with no fusion (BenchBackbones), the floor under any fusion
${table(rows)}`);
}

/** `--autotune` (or DEHVF_AUTOTUNE=1): both plans with their matmuls tuned on this device first. */
export const main = (argv: readonly string[] = []): Promise<void> => withGpu((gpu) => benchDehvfVsConcat(gpu, autotuneRequested(argv.includes("--autotune"))));
