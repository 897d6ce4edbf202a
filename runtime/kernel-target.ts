import { rolledLoopsFor } from "../kernels/loop-end.ts";
import type { KernelTarget } from "../kernels/matmul.ts";
import type { Gpu } from "./device.ts";

/** What the kernel generators need to know about the device in use. */
export function targetFromGpu(gpu: Gpu): KernelTarget {
  const L = gpu.info.limits;
  const dl = gpu.device.limits as unknown as Record<string, number>;
  return {
    isFallback: gpu.info.isFallback,
    subgroupSize: gpu.hasSubgroups ? gpu.info.subgroupMin : 0,
    subgroupMaxSize: gpu.hasSubgroups ? gpu.info.subgroupMax : 0,
    maxWorkgroupStorage: L.maxComputeWorkgroupStorageSize,
    maxInvocations: L.maxComputeInvocationsPerWorkgroup,
    maxWorkgroupsPerDim: L.maxComputeWorkgroupsPerDimension,
    maxTextureDimension2D: dl.maxTextureDimension2D ?? 8192,
    rolledLoops: rolledLoopsFor(gpu.info.isFallback, L.maxStorageBufferBindingSize),
  };
}
