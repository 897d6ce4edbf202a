import { create, globals } from "webgpu";
import { UserFacingError } from "../util/user-facing-error.ts";
import { withoutNativeNoise } from "./quiet-stderr.ts";

/**
 * The process-wide Dawn instance. It must stay referenced for the life of the process:
 * if V8 collects it, Dawn crashes (see ../shared/notes/webgpu-on-cpu.md).
 */
let instance: GPU | undefined;

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

export class NoAdapterError extends UserFacingError {
  constructor() {
    super(
      [
        "no WebGPU adapter found.",
        "dehvf runs on any Vulkan device through Dawn; on a machine without a GPU it uses Mesa's",
        "lavapipe (software Vulkan, Mesa >= 24). On Debian 12 / Ubuntu:",
        "  npm run setup                  # installs it from bookworm-backports when missing",
        "or by hand:",
        "  sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1",
        "(Debian 12's own Mesa 22 is too old; add bookworm-backports to apt sources first.)",
      ].join("\n"),
    );
    this.name = "NoAdapterError";
  }
}

/**
 * While a GPU promise is pending, Dawn's binding re-arms `setImmediate`, keeping one
 * core busy; on a 2-core machine that starves lavapipe. Routing the re-arms through
 * setTimeout(0) costs ~1 ms per wait and was measured +50-60% on large kernels.
 * spinBriefly lets a short wait poll without that millisecond.
 */
function yieldToLavapipe(): void {
  const g = globalThis as unknown as { setImmediate: (f: (...a: unknown[]) => void, ...a: unknown[]) => unknown };
  const immediate = g.setImmediate;
  g.setImmediate = (f, ...a) => (performance.now() < spinUntil ? immediate(f, ...a) : setTimeout(f, 0, ...a));
}

/** Until when a wait is polled without sleeping (see spinBriefly). */
let spinUntil = 0;
/** How long the start of a wait is polled without sleeping (DEHVF_SPIN_MS overrides). */
const SPIN_MS = Number(process.env.DEHVF_SPIN_MS ?? 5);

/**
 * Polls the next wait at full speed for its first few ms: a decode step's small kernels
 * finish in well under the millisecond a sleeping poll costs; a long wait (a training
 * step) then sleeps between polls as before, so lavapipe keeps both cores.
 */
export function spinBriefly(): void {
  spinUntil = performance.now() + SPIN_MS;
}

const WANTED_FEATURES: GPUFeatureName[] = ["shader-f16", "subgroups", "timestamp-query"];

export async function acquireGpu(): Promise<Gpu> {
  process.env.XDG_RUNTIME_DIR ??= "/tmp";
  if (!instance) {
    Object.assign(globalThis, globals);
    instance = create([]);
  }
  const gpu = instance;
  const adapter = await withoutNativeNoise(() => gpu.requestAdapter({ powerPreference: "high-performance" }));
  if (!adapter) throw new NoAdapterError();
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const L = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
    maxBufferSize: L.maxBufferSize,
    maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
    maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: L.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
  };
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const ai = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number; isFallbackAdapter?: boolean };
  const isFallback = Boolean(ai.isFallbackAdapter) || /llvmpipe|lavapipe|swiftshader/i.test(`${ai.description} ${ai.architecture} ${ai.vendor}`);
  if (isFallback) yieldToLavapipe();
  const limits: Record<string, number> = {};
  for (const k of Object.keys(requiredLimits)) limits[k] = (device.limits as unknown as Record<string, number>)[k];
  const info: DeviceInfo = {
    vendor: ai.vendor,
    architecture: ai.architecture,
    description: ai.description,
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
