import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { TensorInfo } from "../safetensors.ts";
import { withPath } from "../errno.ts";
import type { Catalog, CheckpointTensor } from "./catalog.ts";
import { WeightsError } from "./errors.ts";
import { readSafetensorsHeader } from "./safetensors-header.ts";

const INDEX = "model.safetensors.index.json";

/** A JSON object file (config.json, the shard index), or a WeightsError naming it. */
export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw withPath(e, file);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new WeightsError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new WeightsError(file, "must hold a JSON object");
  return v as Record<string, unknown>;
}

function entries(file: string, infos: readonly TensorInfo[]): CheckpointTensor[] {
  return infos.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, file, offset: t.fileOffset, byteLength: t.byteLength }));
}

/** One .safetensors file on its own: its tensors and metadata, no config. */
export function safetensorsCatalog(file: string): Catalog {
  const { tensors, metadata } = readSafetensorsHeader(file);
  return { path: file, format: "safetensors", config: {}, configFile: file, metadata, tensors: new Map(entries(file, tensors).map((t) => [t.name, t])) };
}

/**
 * A Hugging Face checkpoint: config.json and either model.safetensors or the shards a
 * model.safetensors.index.json names (its `weight_map`, tensor → shard, is checked
 * against the shards' own headers). `only`: the file the user named, when it was one.
 */
export function hfCatalog(dir: string, configFile: string, only?: string): Catalog {
  const config = readJson(configFile);
  const index = join(dir, INDEX);
  const single = join(dir, only && only !== INDEX ? only : "model.safetensors");
  if ((only === undefined || only === INDEX) && existsSync(index)) return { path: dir, format: "hf", config, configFile, metadata: {}, tensors: shards(index) };
  if (!existsSync(single))
    throw new WeightsError(dir, `has config.json but neither model.safetensors nor ${INDEX} (PyTorch .bin weights are not read: convert them to safetensors)`);
  const { tensors, metadata } = readSafetensorsHeader(single);
  return { path: only ? single : dir, format: "hf", config, configFile, metadata, tensors: new Map(entries(single, tensors).map((t) => [t.name, t])) };
}

function shards(index: string): Map<string, CheckpointTensor> {
  const map = readJson(index).weight_map;
  if (map === null || typeof map !== "object" || Array.isArray(map)) throw new WeightsError(index, "has no `weight_map` object (tensor name → shard file)");
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\") || shard.startsWith("."))
      throw new WeightsError(index, `weight_map names shard ${JSON.stringify(shard)}, not a file name beside the index`, name);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  const out = new Map<string, CheckpointTensor>();
  for (const [shard, names] of byShard) {
    const file = join(dirname(index), shard);
    if (!existsSync(file)) throw new WeightsError(index, `names shard ${shard}, which does not exist`, names[0]);
    const held = new Map(entries(file, readSafetensorsHeader(file).tensors).map((t) => [t.name, t]));
    for (const name of names) {
      const t = held.get(name);
      if (!t) throw new WeightsError(file, `does not hold this tensor, though ${basename(index)} says it does`, name);
      out.set(name, t);
    }
  }
  return out;
}
