import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type Plan } from "../lowering/plan.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { loadProgram } from "../grammar/modules.ts";
import { acquireGpu, type Gpu } from "../runtime/device.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { initAllParams, syntheticInputs } from "../runtime/interp-backend.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median wall time of `f` after `warm` untimed runs. */
export async function timeIt(f: () => Promise<unknown>, reps = 7, warm = 2): Promise<number> {
  for (let i = 0; i < warm; i++) await f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await f();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

export function loadBenchModel(file: string, name: string): CompiledModel {
  return elaborate(loadProgram(file), name);
}

export interface PlanTiming {
  readonly plan: Plan;
  readonly ms: number;
  readonly outputs: Tensor[];
}

/** Plans a model, runs it on the device (one command buffer per forward) and times it. */
export async function timePlan(gpu: Gpu, model: CompiledModel, dims: Record<string, number>, fuse = true, reps = 7): Promise<PlanTiming> {
  const plan = buildPlan(model, dims, planTarget(gpu), undefined, { fuse });
  const ex = await PlanExecutor.create(gpu, plan, model.program.sources);
  ex.writeParams(initAllParams(model, 0));
  const inputs = syntheticInputs(model, 0, dims);
  let outputs: Tensor[] = [];
  const ms = await timeIt(async () => {
    outputs = await ex.run(inputs);
  }, reps);
  ex.destroy();
  return { plan, ms, outputs };
}

export const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

export function table(rows: (string | number)[][]): string {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) => r.map((x, c) => (c === 0 ? String(x).padEnd(w[c]) : String(x).padStart(w[c]))).join("  ")).join("\n");
}

/** Runs `f` on a freshly acquired device and always releases it. */
export async function withGpu(f: (gpu: Gpu) => Promise<void>): Promise<void> {
  const gpu = await acquireGpu();
  try {
    await f(gpu);
  } finally {
    gpu.destroy();
  }
}
