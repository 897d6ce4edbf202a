import { readFile } from "node:fs/promises";
import { acquireGpu } from "./device.ts";
import type { Platform } from "./platform.ts";

/** Node: Dawn's adapter (lavapipe on a CPU) and the file system (paths or file: URLs). */
export const nodePlatform: Platform = {
  gpu: acquireGpu,
  bytes: async (where) => new Uint8Array(await readFile(where)),
};
