import type { Node } from "./ir.ts";
import { ELEMENTWISE } from "./op-classes.ts";
import type { Kernel, Schedule } from "./schedule.ts";
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
  /**
   * Kernels that run in place: output → the input whose slot it overwrites. The kernel
   * reads that input through its output binding (see `aliased` in kernels/pointwise.ts).
   */
  readonly inPlace: ReadonlyMap<Node, Node>;
  /** bytes of pooled intermediates if each had its own buffer */
  readonly naiveBytes: number;
  /** bytes of the pooled slots: the intermediates' peak with reuse */
  readonly pooledBytes: number;
  /** inputs + params + outputs, which live for the whole run */
  readonly residentBytes: number;
}

export interface MemoryOptions {
  /** let elementwise kernels overwrite an input that dies with them (default true) */
  readonly inPlace?: boolean;
  /** parameters stored as f16: 2 bytes an element */
  readonly half?: ReadonlySet<Node>;
  /** how pooled tensors are placed (default: whichever needs less) — see assignSlots and largestFirst */
  readonly order?: PlacementOrder;
}

export type PlacementOrder = "in-order" | "by-size";

const bytesOf = (shape: readonly number[], elementBytes = 4) => Math.max(4, Math.ceil((numel(shape) * elementBytes) / 4) * 4);

/**
 * Whether every read of buffer `input` in the inline tree of `out` is at the element
 * the kernel is writing: each path from `out` down to `input` passes only through
 * elementwise ops at `out`'s shape (no movement op, broadcast or gather re-indexes it).
 * Then each invocation reads `input[lin]` before it writes `out[lin]` and touches no
 * other invocation's elements, so the two may share a buffer without a hazard.
 * `isBuffer`: the materialized nodes, where the inline tree stops.
 */
export function readsOnlyAtOwnIndex(out: Node, input: Node, isBuffer: (n: Node) => boolean, shapes: ReadonlyMap<Node, readonly number[]>): boolean {
  const own = shapes.get(out)!.join();
  const atOwnIndex = (n: Node) => ELEMENTWISE.has(n.op) && shapes.get(n)!.join() === own;
  // a node is visited at most twice: once reached only at the own index, once re-indexed
  const seen = { clean: new Set<Node>(), moved: new Set<Node>() };
  const visit = (n: Node, clean: boolean): boolean => {
    if (n === input) return clean;
    if (n !== out && isBuffer(n)) return true;
    const done = clean ? seen.clean : seen.moved;
    if (done.has(n)) return true;
    done.add(n);
    const below = clean && atOwnIndex(n);
    return n.src.every((s) => visit(s, below));
  };
  return visit(out, true);
}

/**
 * The input of kernel `k` (the `at`-th) whose slot its output may take over, if any: an
 * elementwise kernel, a pooled input that dies here, of the output's type and size (the
 * kernel reads it through the output's binding, typed as the output), read only at the
 * output's own index.
 */
function inPlaceInput(k: Kernel, at: number, s: Schedule, pooled: (n: Node) => boolean, lastUse: ReadonlyMap<Node, number>): Node | undefined {
  if (k.kind !== "elementwise") return undefined;
  const size = bytesOf(s.shapes.get(k.output)!);
  return k.inputs.find(
    (n) =>
      pooled(n) &&
      lastUse.get(n) === at &&
      n.dtype === k.output.dtype &&
      bytesOf(s.shapes.get(n)!) === size &&
      // a multi-output kernel computes every output before it writes any: each must read n at its own index
      [k.output, ...(k.also ?? [])].every((o) => readsOnlyAtOwnIndex(o, n, (x) => s.materialized.has(x), s.shapes)),
  );
}

/**
 * The write_slot kernels that write into their cache's own buffer (output → cache): the
 * cache is an input (a persistent state buffer) that no later kernel reads, and is not
 * itself an output. Such a kernel touches one slot per row; the others copy the cache.
 */
function slotWritesInPlace(s: Schedule, outputs: ReadonlySet<Node>, lastUse: ReadonlyMap<Node, number>): Map<Node, Node> {
  const found = new Map<Node, Node>();
  s.kernels.forEach((k, i) => {
    const old = k.output.src[0];
    if (k.kind === "write-slot" && old.op === "input" && lastUse.get(old) === i && !outputs.has(old)) found.set(k.output, old);
  });
  return found;
}

/**
 * Liveness-based pooling: an intermediate occupies a slot from the kernel that
 * writes it to the last kernel that reads it; a slot is reused by a later tensor once
 * free. Best fit by size (a reused slot grows to the largest tensor it holds). With
 * `inPlace`, an elementwise kernel may write into the slot of an input that dies with
 * it when that is hazard-free (see readsOnlyAtOwnIndex); otherwise a kernel's output
 * never shares a slot with its own inputs.
 */
export function planMemory(s: Schedule, outputs: readonly Node[], opts: MemoryOptions = {}): MemoryPlan {
  const half = opts.half ?? new Set<Node>();
  // Taking the input's slot leaves a different slot free for later tensors, so best fit
  // can, rarely, pack worse afterwards: in-place must never raise the peak. Placing in
  // kernel order grows reused slots to the largest tensor they take; placing the largest
  // tensors first never grows one, which packs a training step with recomputed layers
  // (many long-lived checkpoints among short-lived large values) far tighter.
  const orders: readonly PlacementOrder[] = opts.order ? [opts.order] : ["in-order", "by-size"];
  const candidates = (opts.inPlace === false ? [false] : [true, false]).flatMap((inPlace) =>
    orders.map((order) => assignSlots(s, outputs, inPlace, half, order)),
  );
  return candidates.reduce((best, m) => (m.pooledBytes < best.pooledBytes ? m : best));
}

function assignSlots(s: Schedule, outputs: readonly Node[], allowInPlace: boolean, half: ReadonlySet<Node>, order: PlacementOrder): MemoryPlan {
  const slots: BufferSlot[] = [];
  const slotOf = new Map<Node, BufferSlot>();
  const inPlace = new Map<Node, Node>();
  const outSet = new Set(outputs);
  const fixed = (n: Node, role: BufferRole) => {
    const slot: BufferSlot = { id: slots.length, role, size: bytesOf(s.shapes.get(n)!, half.has(n) ? 2 : 4), tensors: [n] };
    slots.push(slot);
    slotOf.set(n, slot);
  };
  const lastUse = new Map<Node, number>();
  s.kernels.forEach((k, i) => k.inputs.forEach((n) => lastUse.set(n, i)));
  const slotWrites = allowInPlace ? slotWritesInPlace(s, outSet, lastUse) : new Map<Node, Node>();
  for (const n of s.materialized) {
    if (n.op === "input") fixed(n, "input");
    else if (n.op === "param") fixed(n, "param");
    else if (outSet.has(n) && !slotWrites.has(n)) fixed(n, "output");
  }
  for (const [n, old] of slotWrites) {
    const slot = slotOf.get(old)!;
    slot.tensors.push(n);
    slotOf.set(n, slot);
    inPlace.set(n, old);
  }
  if (order === "by-size") return largestFirst(s, slots, slotOf, inPlace, allowInPlace, lastUse);
  const free: BufferSlot[] = [];
  const releaseAt = new Map<number, BufferSlot[]>();
  let naive = 0;
  // best fit: the smallest free slot that holds `need`, else grow the largest free one
  const bestFit = (need: number): BufferSlot => {
    free.sort((a, b) => a.size - b.size);
    let at = free.findIndex((sl) => sl.size >= need);
    if (at < 0 && free.length) at = free.length - 1;
    if (at < 0) {
      const slot: BufferSlot = { id: slots.length, role: "pooled", size: need, tensors: [] };
      slots.push(slot);
      return slot;
    }
    const slot = free.splice(at, 1)[0];
    slot.size = Math.max(slot.size, need);
    return slot;
  };
  s.kernels.forEach((k, i) => {
    for (const sl of releaseAt.get(i - 1) ?? []) free.push(sl);
    for (const n of [k.output, ...(k.also ?? [])]) {
      if (slotOf.has(n)) continue;
      const need = bytesOf(s.shapes.get(n)!);
      naive += need;
      // only the first output may take over an input's slot (see kernelBuffers' `aliased`)
      const host = allowInPlace && n === k.output ? inPlaceInput(k, i, s, (x) => slotOf.get(x)?.role === "pooled", lastUse) : undefined;
      let slot: BufferSlot;
      if (host) {
        // the host's slot, due back after this kernel, passes straight to the output
        slot = slotOf.get(host)!;
        releaseAt.set(
          i,
          releaseAt.get(i)!.filter((sl) => sl !== slot),
        );
        inPlace.set(n, host);
      } else slot = bestFit(need);
      slot.tensors.push(n);
      slotOf.set(n, slot);
      const end = lastUse.get(n) ?? i;
      releaseAt.set(end, [...(releaseAt.get(end) ?? []), slot]);
    }
  });
  return finished(slots, slotOf, inPlace, naive);
}

function finished(slots: BufferSlot[], slotOf: Map<Node, BufferSlot>, inPlace: Map<Node, Node>, naive: number): MemoryPlan {
  const pooledBytes = slots.filter((sl) => sl.role === "pooled").reduce((a, sl) => a + sl.size, 0);
  const resident = slots.filter((sl) => sl.role !== "pooled").reduce((a, sl) => a + sl.size, 0);
  return { slots, slotOf, inPlace, naiveBytes: naive, pooledBytes, residentBytes: resident };
}

/**
 * Pooled tensors placed largest first, each in the smallest slot that is free for its
 * whole lifetime (from the kernel that writes it to the last that reads it), else in a
 * new slot of its size; every slot is sized by the first (largest) tensor it takes. A
 * tensor written in place over an input shares that input's slot: the two are placed as
 * one, living from the input's write to the output's last read.
 */
function largestFirst(
  s: Schedule,
  slots: BufferSlot[],
  slotOf: Map<Node, BufferSlot>,
  inPlace: Map<Node, Node>,
  allowInPlace: boolean,
  lastUse: ReadonlyMap<Node, number>,
): MemoryPlan {
  interface Group {
    readonly tensors: Node[];
    readonly size: number;
    readonly from: number;
    to: number;
  }
  const groupOf = new Map<Node, Group>();
  const groups: Group[] = [];
  let naive = 0;
  s.kernels.forEach((k, i) => {
    for (const n of [k.output, ...(k.also ?? [])]) {
      if (slotOf.has(n) || groupOf.has(n)) continue;
      const size = bytesOf(s.shapes.get(n)!);
      naive += size;
      const to = lastUse.get(n) ?? i;
      const host = allowInPlace && n === k.output ? inPlaceInput(k, i, s, (x) => groupOf.has(x), lastUse) : undefined;
      if (host) {
        const g = groupOf.get(host)!;
        g.tensors.push(n);
        g.to = to;
        groupOf.set(n, g);
        inPlace.set(n, host);
      } else {
        const g: Group = { tensors: [n], size, from: i, to };
        groups.push(g);
        groupOf.set(n, g);
      }
    }
  });
  const lives = new Map<BufferSlot, Group[]>();
  const fits = (slot: BufferSlot, g: Group) => lives.get(slot)!.every((o) => o.to < g.from || g.to < o.from);
  const pooled: BufferSlot[] = [];
  for (const g of [...groups].sort((a, b) => b.size - a.size || a.from - b.from)) {
    // slots only ever get smaller down the list: the last that fits is the tightest
    let slot: BufferSlot | undefined;
    for (let j = pooled.length - 1; j >= 0 && !slot; j--) if (fits(pooled[j], g)) slot = pooled[j];
    if (!slot) {
      slot = { id: slots.length, role: "pooled", size: g.size, tensors: [] };
      slots.push(slot);
      pooled.push(slot);
      lives.set(slot, []);
    }
    lives.get(slot)!.push(g);
    for (const n of g.tensors) {
      slot.tensors.push(n);
      slotOf.set(n, slot);
    }
  }
  return finished(slots, slotOf, inPlace, naive);
}
