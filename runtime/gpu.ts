/**
 * The device as the runtime core sees it: a GPUDevice with what its adapter offers. Built
 * from any GPUAdapter, Dawn's in Node (runtime/device.ts) or `navigator.gpu`'s in a browser
 * (runtime/platform.ts); nothing here imports a platform module.
 */

export interface DeviceInfo {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  /** the driver's device string (e.g. llvmpipe's vector width); "" when the adapter gives none */
  readonly device: string;
  readonly isFallback: boolean;
  readonly subgroupMin: number;
  readonly subgroupMax: number;
  readonly features: readonly string[];
  readonly limits: Readonly<Record<string, number>>;
}

export interface Gpu {
  readonly device: GPUDevice;
  readonly info: DeviceInfo;
  readonly hasSubgroups: boolean;
  readonly hasF16: boolean;
  readonly hasTimestamps: boolean;
  destroy(): void;
}

/** Until when a wait is polled without sleeping (see spinBriefly). */
let spinUntil = 0;

/** Whether a wait that starts now is still in its polled start (see spinBriefly). */
export const spinning = (): boolean => performance.now() < spinUntil;
/** How long the start of a wait is polled without sleeping (DEHVF_SPIN_MS overrides). */
const SPIN_MS = Number((globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.DEHVF_SPIN_MS ?? 5);

/**
 * Polls the next wait at full speed for its first few ms: a decode step's small kernels
 * finish in well under the millisecond a sleeping poll costs; a long wait (a training
 * step) then sleeps between polls as before, so lavapipe keeps both cores.
 */
export function spinBriefly(): void {
  spinUntil = performance.now() + SPIN_MS;
}

const WANTED_FEATURES: GPUFeatureName[] = ["shader-f16", "subgroups", "timestamp-query"];

/**
 * Opens a device on `adapter` with the features dehvf uses that it offers and its own
 * limits; `onFallback` runs when it is a CPU (software) adapter.
 */
export async function openGpu(adapter: GPUAdapter, onFallback?: () => void): Promise<Gpu> {
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits = Object.fromEntries(PLAN_LIMITS.map((k) => [k, (adapter.limits as unknown as Record<string, number>)[k]]));
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const gpu = describe(device, adapter.info, Object.keys(requiredLimits));
  if (gpu.info.isFallback) onFallback?.();
  return gpu;
}

/** The limits a plan reads (see runtime/kernel-target.ts), as WebGPU names them. */
const PLAN_LIMITS = [
  "maxComputeWorkgroupStorageSize",
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
];

/**
 * A device the caller opened (a page's own `navigator.gpu` device) as a Gpu: its features
 * and limits are what it was opened with. `destroy` leaves it to its owner.
 */
export function gpuFromDevice(device: GPUDevice): Gpu {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  return { ...describe(device, info, PLAN_LIMITS), destroy: () => {} };
}

function describe(device: GPUDevice, adapterInfo: GPUAdapterInfo | undefined, limitNames: readonly string[]): Gpu {
  const ai = (adapterInfo ?? {}) as Partial<GPUAdapterInfo> & { subgroupMinSize?: number; subgroupMaxSize?: number; isFallbackAdapter?: boolean };
  const isFallback = Boolean(ai.isFallbackAdapter) || /llvmpipe|lavapipe|swiftshader/i.test(`${ai.description} ${ai.architecture} ${ai.vendor}`);
  const features = WANTED_FEATURES.filter((f) => device.features.has(f));
  const limits: Record<string, number> = {};
  for (const k of limitNames) limits[k] = (device.limits as unknown as Record<string, number>)[k];
  const info: DeviceInfo = {
    vendor: ai.vendor ?? "",
    architecture: ai.architecture ?? "",
    description: ai.description ?? "",
    device: ai.device ?? "",
    isFallback,
    subgroupMin: ai.subgroupMinSize ?? 0,
    subgroupMax: ai.subgroupMaxSize ?? 0,
    features,
    limits,
  };
  return {
    device,
    info,
    hasSubgroups: features.includes("subgroups"),
    hasF16: features.includes("shader-f16"),
    hasTimestamps: features.includes("timestamp-query"),
    destroy: () => device.destroy(),
  };
}
