import type { Gpu } from "../runtime/device.ts";
import { loadBenchModel, withGpu, table, timePlan } from "./measure.ts";

/**
 * (c) Same backbones, 256 visual tokens: DEHVF keeps the text at T, concat runs the LLM
 * on T + 256. The prediction is the ratio of the plans' FLOPs.
 */
export async function benchDehvfVsConcat(gpu: Gpu): Promise<void> {
  const file = "models/bench/dehvf-vs-concat.dehvf";
  const rows: (string | number)[][] = [["T", "DEHVF ms", "concat ms", "measured ratio", "FLOP ratio (predicted)", "DEHVF GFLOP", "concat GFLOP"]];
  for (const T of [16, 64]) {
    const dims = { B: 2, T };
    const d = await timePlan(gpu, loadBenchModel(file, "BenchDEHVF"), dims, true, 5);
    const c = await timePlan(gpu, loadBenchModel(file, "BenchConcat"), dims, true, 5);
    const flops = (p: typeof d) => p.plan.kernels.reduce((a, k) => a + k.flops, 0);
    rows.push([T, d.ms.toFixed(1), c.ms.toFixed(1), `${(c.ms / d.ms).toFixed(2)}x`, `${(flops(c) / flops(d)).toFixed(2)}x`, (flops(d) / 1e9).toFixed(3), (flops(c) / 1e9).toFixed(3)]);
  }
  console.log(`\n(c) DEHVF vs concat (B=2, 256 visual tokens, same backbones)\n${table(rows)}`);
}

export const main = (): Promise<void> => withGpu(benchDehvfVsConcat);
