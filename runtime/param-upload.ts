import type { Tensor } from "../compiler/tensor.ts";
import type { ParamInfo } from "../compiler/values.ts";
import { sourcedParams, streamSourced } from "../io/checkpoints/load.ts";
import type { PlanExecutor } from "./executor.ts";

/**
 * Fills an executor's parameters: the values in `params` (init rules, trained weights,
 * optimizer state) and, for the parameters a checkpoint provides that `params` does not
 * hold, the checkpoint's tensors streamed as float32 straight into device buffers.
 */
export function uploadParams(ex: PlanExecutor, model: { readonly params: readonly ParamInfo[] }, params: ReadonlyMap<string, Tensor>): Promise<void> {
  // a weight split into blocks (PlanTensor.part) is used under its own name
  const used = new Set(ex.plan.params.map((p) => p.part?.of ?? p.name));
  const sourced = sourcedParams(model.params).filter((p) => used.has(p.name) && !params.has(p.name));
  return ex.writeParamsFrom(streamSourced(sourced), params);
}
