import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../compiler/tensor.ts";
import { recoverDirAtomic, writeDirAtomic } from "../io/atomic.ts";
import { openSafetensors, writeSafetensors } from "../io/safetensors.ts";

/**
 * A stage's directory: `checkpoint/` (trainable weights + AdamW state + step, replaced
 * atomically as a whole), `final.safetensors` (every model parameter once the stage is
 * done: what later stages and `dehvf eval` load), `metrics.jsonl`, `loss.png`, `eval.json`.
 */
export const STAGE_FILES = { checkpoint: "checkpoint", state: "state.safetensors", final: "final.safetensors", metrics: "metrics.jsonl", plot: "loss.png", eval: "eval.json" } as const;

export interface Saved {
  readonly tensors: Map<string, Tensor>;
  readonly meta: Record<string, string>;
}

function toWrite(tensors: ReadonlyMap<string, Tensor>) {
  return new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data) }]));
}

export async function saveTensors(file: string, tensors: ReadonlyMap<string, Tensor>, meta: Record<string, string>): Promise<void> {
  await writeSafetensors(file, toWrite(tensors), meta);
}

export async function loadTensors(file: string): Promise<Saved> {
  const r = await openSafetensors(file);
  try {
    const tensors = new Map<string, Tensor>();
    for (const name of r.names()) {
      const info = r.info(name);
      tensors.set(name, { shape: [...info.shape], data: Float64Array.from(await r.readF32(name)) });
    }
    return { tensors, meta: { ...r.metadata } };
  } finally {
    await r.close();
  }
}

/** A file's metadata only (the header; no tensor bytes are read). */
export async function loadMeta(file: string): Promise<Record<string, string>> {
  const r = await openSafetensors(file);
  await r.close();
  return { ...r.metadata };
}

/** Writes the resumable state: a kill at any moment leaves the previous checkpoint or this one, whole. */
export async function saveCheckpoint(stageDir: string, tensors: ReadonlyMap<string, Tensor>, meta: Record<string, string>): Promise<void> {
  await writeDirAtomic(join(stageDir, STAGE_FILES.checkpoint), (tmp) => saveTensors(join(tmp, STAGE_FILES.state), tensors, meta));
}

export async function loadCheckpoint(stageDir: string): Promise<Saved | undefined> {
  const dir = join(stageDir, STAGE_FILES.checkpoint);
  if ((await recoverDirAtomic(dir)) === "missing" || !existsSync(join(dir, STAGE_FILES.state))) return undefined;
  return loadTensors(join(dir, STAGE_FILES.state));
}
