/**
 * The runtime core: what a generated model module (`dehvf compile --emit ts`) imports, as
 * `dehvf/runtime`. Nothing here or below imports a platform module (spec/web-page.test.ts
 * bundles it for the browser), so it runs in Node on Dawn and in a page on navigator.gpu.
 */
export type { PlanTensor, RunnablePlan } from "../lowering/plan.ts";
export { decodeSafetensors, type DecodedTensor } from "../io/safetensors-format.ts";
export { createExecutor, PlanExecutor } from "./executor.ts";
export { type DeviceInfo, type Gpu, gpuFromDevice, openGpu } from "./gpu.ts";
export { type HostArray, LoadedModel, type LoadOptions, ModelInputError, type ModelPlans, type PlanSet, type WeightsSource } from "./loaded-model.ts";
export { browserPlatform, type Platform } from "./platform.ts";
export { type DecodePlans, type GreedyOptions, PlannedDecoder, type StateLink } from "./planned-decoder.ts";
