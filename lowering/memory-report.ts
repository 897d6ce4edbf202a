import type { CompiledModel } from "../compiler/elaborate.ts";
import { type Plan, planTextureBytes } from "./plan.ts";
import { numel } from "../compiler/tensor.ts";

/*
 * What a plan keeps on the device, by what it is for, so a user can tell what to shrink
 * (batch, sequence, which weights train) before a run fails for memory. Parameters of a
 * training step include AdamW's moments (`name@adam_m`, `name@adam_v`, compiler/train-graph.ts);
 * decode plans carry state inputs (KV caches, CompiledModel.state).
 */

export interface MemoryCategory {
  readonly name: string;
  readonly bytes: number;
  /** how many tensors or buffers */
  readonly count: number;
}

export interface MemoryReport {
  readonly device: readonly MemoryCategory[];
  readonly deviceBytes: number;
  /** the host memory loading the parameters needs (see hostBytes) */
  readonly host: readonly MemoryCategory[];
  readonly hostBytes: number;
}

const OPTIMIZER_STATE = /@adam_[mv]$/;
const FLOAT64 = 8;
const FLOAT32 = 4;

/**
 * The plan's device memory by category, and the host memory to load it: parameters a
 * checkpoint provides stream to the device one tensor at a time as float32
 * (runtime/param-upload.ts); the others are initialised on the host in float64.
 */
export function memoryReport(plan: Plan, model: CompiledModel): MemoryReport {
  const slotBytes = new Map(plan.memory.slots.map((s) => [s.id, s.size]));
  const info = new Map(model.params.map((p) => [p.name, p]));
  const stateInputs = new Set(model.state.map((s) => s.input));
  const stateUpdates = new Set(model.state.flatMap((s) => (s.update ? [s.update] : [])));
  const device = new Map<string, { bytes: number; count: number }>();
  const add = (m: Map<string, { bytes: number; count: number }>, name: string, bytes: number) => {
    const c = m.get(name) ?? { bytes: 0, count: 0 };
    m.set(name, { bytes: c.bytes + bytes, count: c.count + 1 });
  };
  for (const p of plan.params) {
    const bytes = slotBytes.get(p.slot) ?? 0;
    if (OPTIMIZER_STATE.test(p.name)) add(device, "optimizer state (AdamW m, v)", bytes);
    else if (info.get(p.part?.of ?? p.name)?.trainable) add(device, "trainable parameters", bytes);
    else add(device, `frozen weights (${p.dtype})`, bytes);
  }
  for (const i of plan.inputs) add(device, stateInputs.has(i.name) ? "decode state (KV cache, kept values)" : "inputs", slotBytes.get(i.slot) ?? 0);
  // an output written into an input's or parameter's buffer (a cache slot written in place) takes no memory of its own
  const resident = new Set([...plan.params, ...plan.inputs].map((t) => t.slot));
  for (const o of plan.outputs) {
    if (resident.has(o.slot)) continue;
    const bytes = slotBytes.get(o.slot) ?? 0;
    if (stateUpdates.has(o.name)) add(device, "decode state updates (copied over the state after each step)", bytes);
    else if (o.name.startsWith("new:")) add(device, "updated parameters and AdamW state (the step's outputs)", bytes);
    else add(device, "outputs", bytes);
  }
  const pooled = plan.memory.slots.filter((s) => s.role === "pooled");
  device.set("intermediates (pooled peak: activations, and gradients in a training step)", { bytes: plan.memory.pooledBytes, count: pooled.length });
  if (plan.textures.length) device.set("textures (copies of constant matmul B operands)", { bytes: planTextureBytes(plan), count: plan.textures.length });

  const host = new Map<string, { bytes: number; count: number }>();
  let largestStreamed = 0;
  for (const p of plan.params) {
    // AdamW's moments start as zeros written straight to the device
    if (OPTIMIZER_STATE.test(p.name)) continue;
    const src = info.get(p.part?.of ?? p.name)?.source;
    // a weight split into blocks streams whole
    if (src) largestStreamed = Math.max(largestStreamed, numel(p.part ? (info.get(p.part.of)!.shape as number[]) : p.shape) * FLOAT32);
    else add(host, "parameters initialised here (float64)", numel(p.shape) * FLOAT64);
  }
  if (largestStreamed) host.set("checkpoint weights, streamed one tensor at a time (the largest, float32)", { bytes: largestStreamed, count: 1 });
  const list = (m: Map<string, { bytes: number; count: number }>) => [...m].map(([name, c]) => ({ name, ...c }));
  const sum = (cs: readonly MemoryCategory[]) => cs.reduce((a, c) => a + c.bytes, 0);
  const [d, h] = [list(device), list(host)];
  return { device: d, deviceBytes: sum(d), host: h, hostBytes: sum(h) };
}
