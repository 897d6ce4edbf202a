import { type Gpu, openGpu } from "./gpu.ts";

/**
 * What differs between Node and a browser for running a model: where the WebGPU device
 * comes from and how a file's bytes are read. The runtime core takes one of these; the
 * Node one (Dawn, the file system) is runtime/node-platform.ts, outside the core.
 */
export interface Platform {
  /** a device on the platform's adapter, with the features dehvf uses that it offers */
  gpu(): Promise<Gpu>;
  /** the bytes of a file (Node) or URL (browser) */
  bytes(where: string | URL): Promise<Uint8Array>;
}

/** A page: `navigator.gpu` and `fetch`. */
export const browserPlatform: Platform = {
  async gpu() {
    const adapter = await navigator.gpu?.requestAdapter();
    if (!adapter) throw new Error("no WebGPU adapter in this browser (Chromium on a CPU needs --enable-unsafe-webgpu)");
    return openGpu(adapter);
  },
  bytes: fetchBytes,
};

/** The body of `url`, or an error naming it and the status it answered. */
export async function fetchBytes(url: string | URL): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${String(url)} answered ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}
