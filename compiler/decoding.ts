import { type Dim, dimSub, type Shape } from "./dims.ts";
import type { DType, Node } from "./ir.ts";
import type { TensorOps } from "./tensor-ops.ts";

/*
 * Incremental decoding, written in the language. A model elaborates in one of three modes:
 *   full     the whole sequence at once (training, evaluation of logits): no state;
 *   prefill  the prompt (and any visual prefix) from position 0: fills the state;
 *   decode   one new token per row at its own position `cache_pos`: reads and updates it.
 * Four builtins make a block mode-aware; in full mode each is the identity (or false), so
 * a model's training graph does not change:
 *   positions(x, axis)  absolute positions of x's entries along `axis`, shaped to broadcast
 *                       against x (size 1 on every other axis but the batch);
 *   cached(x, axis)     the keys/values of every position so far: a state tensor of C slots
 *                       along `axis` (C = the context length) with x written at its positions;
 *   once(x)             computed at prefill, kept, and read back by every decode step (the
 *                       per-image FFN memory, so the ViT runs once);
 *   decoding()          true while decoding (a concat prefix is already in the cache).
 * State tensors are inputs whose buffers persist between runs; each step's new value is an
 * output copied over them (CompiledModel.state).
 */

export type ElaborationMode = "full" | "prefill" | "decode";

/** The input holding each row's next position while decoding. */
export const CACHE_POS = "cache_pos";
/** The run-time dimension of the cache: the longest sequence a generation may reach. */
export const CONTEXT_DIM = "C";

/** What the decoding builtins need from the elaborator. */
export interface DecodingContext {
  readonly mode: ElaborationMode;
  /** a state tensor of the current block instance, as an input node (its update is registered with `update`) */
  state(kind: string, shape: Shape, dtype: DType): Node;
  update(state: Node, value: Node): void;
  /** the [B] int input `cache_pos` (decode mode) */
  cachePos(batch: Dim): Node;
  /** the context length C */
  context(): Dim;
}

const normAxis = (x: Node, axis: number) => (axis < 0 ? axis + x.shape.length : axis);

/** `v` laid along `axis` of a tensor of x's rank (size 1 on every other axis). */
function along(t: TensorOps, v: Node, rank: number, axis: number): Node {
  return t.reshape(
    v,
    Array.from({ length: rank }, (_, i) => (i === axis ? v.shape[0] : 1)),
  );
}

/** 1 where the index along `axis` of a tensor shaped `shape` is its batch row's `pos` (int [B]), else 0; broadcastable to `shape`. */
export function slotMask(t: TensorOps, shape: Shape, pos: Node, axis: number): Node {
  const slot = along(t, t.arange(shape[axis]), shape.length, axis);
  return t.binary("cmpeq", slot, t.reshape(t.float(pos), [shape[0], ...Array(shape.length - 1).fill(1)]));
}

export function positions(t: TensorOps, ctx: DecodingContext, x: Node, axisArg: number): Node {
  const axis = normAxis(x, axisArg);
  const rank = x.shape.length;
  const offsets = along(t, t.arange(x.shape[axis]), rank, axis);
  if (ctx.mode !== "decode") return offsets;
  // each row continues from its own position: [B, 1, ..., 1] + [1, .., S, .., 1]
  const start = t.reshape(t.cast(ctx.cachePos(x.shape[0]), "f32"), [x.shape[0], ...Array(rank - 1).fill(1)]);
  return t.add(start, offsets);
}

export function cached(t: TensorOps, ctx: DecodingContext, x: Node, axisArg: number): Node {
  if (ctx.mode === "full") return x;
  const axis = normAxis(x, axisArg);
  const C = ctx.context();
  const shape = x.shape.map((d, i) => (i === axis ? C : d));
  const old = ctx.state("cache", shape, x.dtype);
  let next: Node;
  if (ctx.mode === "prefill") {
    // the prompt fills slots 0..S-1; later slots are written by decode steps before any query reaches them
    next = t.pad(x, axis, 0, dimSub(C, x.shape[axis]));
  } else {
    // x holds one position per row (size 1 along axis): it goes to slot cache_pos[b]
    next = t.make("write_slot", [old, x, ctx.cachePos(x.shape[0])], { axis });
  }
  ctx.update(old, next);
  return next;
}

export function once(ctx: DecodingContext, x: Node): Node {
  if (ctx.mode === "full") return x;
  const kept = ctx.state("once", x.shape, x.dtype);
  if (ctx.mode === "decode") return kept;
  ctx.update(kept, x);
  return x;
}
