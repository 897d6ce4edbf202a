import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type Plan, type PlanTarget, type WeightStorage } from "../lowering/plan.ts";
import type { ParamInfo } from "../compiler/values.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { DeviceLimits } from "../compiler/size-limits.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { UserFacingError } from "../util/user-facing-error.ts";
import { targetFromGpu } from "./kernel-target.ts";
import type { RowStrategy } from "../kernels/row.ts";
import { type AutotuneOptions, devicePlan } from "./autotune.ts";
import type { Gpu } from "./device.ts";
import { PlanExecutor } from "./executor.ts";
import { uploadParams } from "./param-upload.ts";

/** `DEHVF_ROW_STRATEGY=thread|subgroup|workgroup` forces how row kernels split a row (for comparisons). */
function rowStrategyFromEnv(): RowStrategy | undefined {
  const v = process.env.DEHVF_ROW_STRATEGY;
  if (!v) return undefined;
  if (v !== "thread" && v !== "subgroup" && v !== "workgroup")
    throw new UserFacingError(`DEHVF_ROW_STRATEGY must be thread, subgroup or workgroup, not "${v}"`);
  return v;
}

/** The device's per-buffer limits, which every plan's tensors must fit (compiler/size-limits.ts). */
export function deviceLimits(gpu: Gpu): DeviceLimits {
  return { maxBindingBytes: gpu.info.limits.maxStorageBufferBindingSize, maxBufferBytes: gpu.info.limits.maxBufferSize };
}

/** Refuses f16 weights on an adapter without shader-f16 (SwiftShader, say); `asker` names who asked. */
export function checkWeightStorage(gpu: Gpu, weights: WeightStorage | undefined, asker: string): void {
  if (weights === "f16" && !gpu.hasF16)
    throw new UserError(`${asker} asks for f16 weights, but this adapter (${gpu.info.description}) has no shader-f16: use f32`);
}

/**
 * The weight storage of an inference command (`run`, `generate`): `asked` (--weights), else
 * f16 for a model whose frozen weights come from a checkpoint (`from "…"`, an imported
 * model) where the adapter reads f16, else f32. `say` tells which when it is f16.
 */
export function inferenceWeights(gpu: Gpu, params: readonly ParamInfo[], asked: WeightStorage | undefined, say: (line: string) => void): WeightStorage {
  checkWeightStorage(gpu, asked, "--weights");
  if (asked) return asked;
  const imported = gpu.hasF16 && params.some((p) => p.source && !p.trainable);
  if (imported) say("weights: f16 on the device (frozen weights from a checkpoint; --weights f32 keeps f32)");
  return imported ? "f16" : "f32";
}

export function planTarget(gpu: Gpu): PlanTarget {
  const rowStrategy = rowStrategyFromEnv();
  // DEHVF_MAX_BINDING_BYTES lowers the binding limit, so tests split small weights (compiler/passes/split-params.ts)
  const lowered = Number(process.env.DEHVF_MAX_BINDING_BYTES);
  const limits = deviceLimits(gpu);
  return {
    ...targetFromGpu(gpu),
    ...limits,
    ...(lowered > 0 && lowered < limits.maxBindingBytes ? { maxBindingBytes: lowered } : {}),
    maxStorageBuffers: gpu.info.limits.maxStorageBuffersPerShaderStage,
    shaderF16: gpu.hasF16,
    fuseChains: process.env.DEHVF_FUSE_CHAINS ? process.env.DEHVF_FUSE_CHAINS === "1" : !gpu.info.isFallback,
    // switches for comparisons: DEHVF_IN_PLACE=0, DEHVF_TEXTURE_B=0, DEHVF_VEC4=0, DEHVF_ROLLED_LOOPS=0 (the compiler reads no environment)
    inPlace: process.env.DEHVF_IN_PLACE !== "0",
    textureB: process.env.DEHVF_TEXTURE_B !== "0",
    vec4: process.env.DEHVF_VEC4 !== "0",
    ...(process.env.DEHVF_ROLLED_LOOPS === "0" ? { rolledLoops: false } : {}),
    ...(rowStrategy ? { rowStrategy } : {}),
  };
}

export interface WebgpuRun {
  readonly plan: Plan;
  readonly outputs: Tensor[];
  readonly compileMs: number;
  readonly firstRunMs: number;
  /** a second run, pipelines warm */
  readonly runMs: number;
  readonly kernelMs?: number[];
}

export interface WebgpuRunOptions {
  /** per-kernel GPU times (timestamp queries) */
  readonly profile?: boolean;
  /** tune the plan's matmuls on this device first (or take them from the cache): runtime/autotune.ts */
  readonly autotune?: boolean | AutotuneOptions;
  /** store frozen weights as f16 (lowering/plan.ts PlanOptions.weights) */
  readonly weights?: WeightStorage;
}

/** Plans the model for these dims, uploads the parameters (`params`, and checkpoint tensors streamed for the others), runs twice (cold, warm). */
export async function runWebgpu(
  gpu: Gpu,
  model: CompiledModel,
  params: ReadonlyMap<string, Tensor>,
  inputs: ReadonlyMap<string, Tensor>,
  dims: Readonly<Record<string, number>>,
  opts: WebgpuRunOptions = {},
): Promise<WebgpuRun> {
  const t0 = performance.now();
  const plan = await devicePlan(
    gpu,
    (matmulTuning) => buildPlan(model, dims, planTarget(gpu), undefined, { matmulTuning, weights: opts.weights }),
    opts.autotune,
  );
  const ex = await PlanExecutor.create(gpu, plan, model.program.sources);
  const t1 = performance.now();
  await uploadParams(ex, model, params);
  await ex.run(inputs);
  const t2 = performance.now();
  const outputs = await ex.run(inputs);
  const t3 = performance.now();
  const kernelMs = opts.profile ? await ex.profile(inputs) : undefined;
  ex.destroy();
  return { plan, outputs, compileMs: t1 - t0, firstRunMs: t2 - t1, runMs: t3 - t2, kernelMs };
}
