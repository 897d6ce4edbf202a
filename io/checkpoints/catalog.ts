import { existsSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { Dtype } from "../safetensors.ts";
import { WeightsError } from "./errors.ts";
import { hfCatalog, safetensorsCatalog } from "./hf.ts";
import { llama2cCatalog } from "./llama2c.ts";

/** How a checkpoint is stored: a Hugging Face model (config.json + safetensors), llama2.c's .bin, or a bare .safetensors file. */
export type CheckpointFormat = "hf" | "llama2c" | "safetensors";

export const FORMAT_NAMES: Readonly<Record<CheckpointFormat, string>> = {
  hf: "a Hugging Face checkpoint (config.json + safetensors)",
  llama2c: "a llama2.c .bin checkpoint",
  safetensors: "a .safetensors file",
};

/** One stored tensor: where its bytes are, so it can be read by offset. */
export interface CheckpointTensor {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly file: string;
  /** absolute position in `file` */
  readonly offset: number;
  readonly byteLength: number;
}

/** What a checkpoint holds, known from its headers alone (no tensor data is read). */
export interface Catalog {
  /** absolute path of the checkpoint (a directory or a file) */
  readonly path: string;
  readonly format: CheckpointFormat;
  /** config.json (Hugging Face) or the header (llama2.c) as an object; {} when there is none */
  readonly config: Readonly<Record<string, unknown>>;
  /** the file `config` came from, for messages */
  readonly configFile: string;
  /** safetensors `__metadata__` (of the single file; {} for shards and llama2.c) */
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, CheckpointTensor>;
}

const cache = new Map<string, { stamp: string; catalog: Catalog }>();

/**
 * The catalog of the checkpoint at `path`, detecting its format: a directory with
 * config.json (or a .safetensors / model.safetensors.index.json file beside one) is a
 * Hugging Face checkpoint; a .bin file is llama2.c's; any other .safetensors file is read
 * as it is. Cached while the path's inode, size and times stay the same.
 */
export function openCatalog(path: string): Catalog {
  const abs = resolve(path);
  const st = statSync(abs, { throwIfNoEntry: false });
  if (!st) throw new WeightsError(path, "no such file or directory");
  const stamp = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  const hit = cache.get(abs);
  if (hit && hit.stamp === stamp) return hit.catalog;
  const catalog = detectAndOpen(abs, path, st.isDirectory());
  cache.set(abs, { stamp, catalog });
  return catalog;
}

function detectAndOpen(abs: string, shown: string, isDir: boolean): Catalog {
  if (isDir) {
    if (existsSync(join(abs, "config.json"))) return hfCatalog(abs, join(abs, "config.json"));
    if (existsSync(join(abs, "model.safetensors"))) return safetensorsCatalog(join(abs, "model.safetensors"));
    throw new WeightsError(shown, "is a directory without config.json or model.safetensors: not a Hugging Face checkpoint");
  }
  const name = basename(abs);
  const beside = join(dirname(abs), "config.json");
  if (name.endsWith(".safetensors") || name === "model.safetensors.index.json") {
    if (existsSync(beside)) return hfCatalog(dirname(abs), beside, name);
    if (name.endsWith(".safetensors")) return safetensorsCatalog(abs);
  }
  if (name.endsWith(".bin")) return llama2cCatalog(abs);
  throw new WeightsError(
    shown,
    "cannot tell the checkpoint format: give a Hugging Face model directory (config.json + model.safetensors), a llama2.c .bin or a .safetensors file",
  );
}
