import type { Node } from "./ir.ts";
import type { Schedule } from "./schedule.ts";
import { numel } from "./tensor.ts";

/** Where a materialized tensor lives on the device. */
export type BufferRole = "input" | "param" | "output" | "pooled";

export interface BufferSlot {
  readonly id: number;
  readonly role: BufferRole;
  /** bytes */
  size: number;
  /** the tensors placed here over the plan's lifetime (several, for pooled slots) */
  readonly tensors: Node[];
}

export interface MemoryPlan {
  readonly slots: readonly BufferSlot[];
  readonly slotOf: ReadonlyMap<Node, BufferSlot>;
  /** bytes of pooled intermediates if each had its own buffer */
  readonly naiveBytes: number;
  /** bytes of the pooled slots: the intermediates' peak with reuse */
  readonly pooledBytes: number;
  /** inputs + params + outputs, which live for the whole run */
  readonly residentBytes: number;
}

const bytesOf = (shape: readonly number[]) => Math.max(4, numel(shape) * 4);

/**
 * Liveness-based pooling: an intermediate occupies a slot from the kernel that
 * writes it to the last kernel that reads it; a slot is reused by a later tensor once
 * free. Best fit by size (a reused slot grows to the largest tensor it holds). A
 * kernel's output never shares a slot with its own inputs: there is no in-place
 * update, which keeps every kernel free of read/write hazards.
 */
export function planMemory(s: Schedule, outputs: readonly Node[]): MemoryPlan {
  const slots: BufferSlot[] = [];
  const slotOf = new Map<Node, BufferSlot>();
  const outSet = new Set(outputs);
  const fixed = (n: Node, role: BufferRole) => {
    const slot: BufferSlot = { id: slots.length, role, size: bytesOf(s.shapes.get(n)!), tensors: [n] };
    slots.push(slot);
    slotOf.set(n, slot);
  };
  for (const n of s.materialized) {
    if (n.op === "input") fixed(n, "input");
    else if (n.op === "param") fixed(n, "param");
    else if (outSet.has(n)) fixed(n, "output");
  }
  const lastUse = new Map<Node, number>();
  s.kernels.forEach((k, i) => k.inputs.forEach((n) => lastUse.set(n, i)));
  const free: BufferSlot[] = [];
  const releaseAt = new Map<number, BufferSlot[]>();
  let naive = 0;
  s.kernels.forEach((k, i) => {
    for (const sl of releaseAt.get(i - 1) ?? []) free.push(sl);
    const n = k.output;
    if (slotOf.has(n)) return;
    const need = bytesOf(s.shapes.get(n)!);
    naive += need;
    // best fit: the smallest free slot that holds it, else grow the largest free one
    free.sort((a, b) => a.size - b.size);
    let at = free.findIndex((sl) => sl.size >= need);
    if (at < 0 && free.length) at = free.length - 1;
    let slot: BufferSlot;
    if (at >= 0) {
      slot = free.splice(at, 1)[0];
      slot.size = Math.max(slot.size, need);
      slot.tensors.push(n);
    } else {
      slot = { id: slots.length, role: "pooled", size: need, tensors: [n] };
      slots.push(slot);
    }
    slotOf.set(n, slot);
    const end = lastUse.get(n) ?? i;
    releaseAt.set(end, [...(releaseAt.get(end) ?? []), slot]);
  });
  const pooled = slots.filter((sl) => sl.role === "pooled").reduce((a, sl) => a + sl.size, 0);
  const resident = slots.filter((sl) => sl.role !== "pooled").reduce((a, sl) => a + sl.size, 0);
  return { slots, slotOf, naiveBytes: naive, pooledBytes: pooled, residentBytes: resident };
}
