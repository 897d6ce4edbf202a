import type { Gpu } from "../runtime/device.ts";
import { loadBenchModel, withGpu, mib, table, timePlan } from "./measure.ts";

/** (d) What fusion buys: kernels, planned memory and time, fused vs one kernel per op. */
export async function benchFusion(gpu: Gpu): Promise<void> {
  const dims = { B: 2, T: 16 };
  const rows: (string | number)[][] = [
    ["model (B=2, T=16)", "IR nodes", "kernels fused", "unfused", "ratio", "peak fused", "peak unfused", "ms fused", "ms unfused", "speed-up"],
  ];
  for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
    const m = loadBenchModel("models/tiny-vqa.dehvf", name);
    const f = await timePlan(gpu, m, dims, true, 5);
    const u = await timePlan(gpu, m, dims, false, 3);
    rows.push([
      name,
      f.plan.irNodes,
      f.plan.kernels.length,
      u.plan.kernels.length,
      `${(u.plan.kernels.length / f.plan.kernels.length).toFixed(1)}x`,
      mib(f.plan.memory.pooledBytes),
      mib(u.plan.memory.pooledBytes),
      f.ms.toFixed(1),
      u.ms.toFixed(1),
      `${(u.ms / f.ms).toFixed(2)}x`,
    ]);
  }
  console.log(`\n(d) fusion: kernels, planned intermediate memory and forward time, fused vs unfused\n${table(rows)}`);
}

export const main = (): Promise<void> => withGpu(benchFusion);
