import type { Span } from "../grammar/source.ts";
import { type Dim, type Shape, dimStr, shapeStr } from "./dims.ts";

/**
 * The closed set of primitive ops. Everything the DSL offers (softmax, norms,
 * attention, patchify, ...) lowers to these; per-op rules live in Record<Op, ...>
 * tables so adding an op without its rules is a type error.
 */
export const OPS = [
  // sources
  "input",
  "param",
  "const",
  "size",
  "arange",
  // elementwise unary
  "neg",
  "recip",
  "exp",
  "log",
  "sqrt",
  "sin",
  "cos",
  "tanh",
  "erf",
  "cast",
  // elementwise binary / ternary (operands already broadcast to one shape)
  "add",
  "mul",
  "max",
  "cmplt",
  "cmpeq",
  "where",
  // random numbers: int key and counter → uniform in [0, 1) (compiler/hash.ts)
  "hash",
  // reductions over one axis, keepdim
  "sum",
  "rmax",
  // movement
  "reshape",
  "permute",
  "expand",
  "slice",
  "pad",
  "concat",
  // contraction and lookup
  "matmul",
  "gather",
  // state: one slot of a KV cache written per batch row (compiler/decoding.ts)
  "write_slot",
  // identity that keeps a recomputation apart from the forward it repeats (compiler/recompute.ts)
  "barrier",
] as const;
export type Op = (typeof OPS)[number];

/**
 * What kind of computation each op is, beside the op list: the scheduler's groupings
 * (op-classes.ts), constant folding's list and the kernels' render tables derive from it,
 * and a new op without its entry here is a type error.
 * - `kind`: "source" (an input or parameter buffer), "constant" (index math only),
 *   "unary"/"binary"/"ternary" (per element, same shape), "cast", "random" (per element,
 *   from int keys), "identity" (per element, the value itself), "reduce" (one axis),
 *   "movement" (index math over one buffer), "contraction", "lookup", "state"
 * - `fold`: constant folding evaluates it on constant operands (compiler/passes/fold-constants.ts)
 * - `free`: no arithmetic per element when inlined (the scheduler's recompute cost)
 */
export const OP_TRAITS = {
  input: { kind: "source", fold: false, free: false },
  param: { kind: "source", fold: false, free: false },
  const: { kind: "constant", fold: false, free: false },
  size: { kind: "constant", fold: false, free: false },
  arange: { kind: "constant", fold: false, free: false },
  neg: { kind: "unary", fold: true, free: false },
  recip: { kind: "unary", fold: true, free: false },
  exp: { kind: "unary", fold: true, free: false },
  log: { kind: "unary", fold: true, free: false },
  sqrt: { kind: "unary", fold: true, free: false },
  sin: { kind: "unary", fold: true, free: false },
  cos: { kind: "unary", fold: true, free: false },
  tanh: { kind: "unary", fold: true, free: false },
  erf: { kind: "unary", fold: true, free: false },
  cast: { kind: "cast", fold: true, free: true },
  add: { kind: "binary", fold: true, free: false },
  mul: { kind: "binary", fold: true, free: false },
  max: { kind: "binary", fold: true, free: false },
  cmplt: { kind: "binary", fold: true, free: false },
  cmpeq: { kind: "binary", fold: true, free: false },
  where: { kind: "ternary", fold: true, free: false },
  hash: { kind: "random", fold: false, free: false },
  sum: { kind: "reduce", fold: false, free: false },
  rmax: { kind: "reduce", fold: false, free: false },
  reshape: { kind: "movement", fold: false, free: true },
  permute: { kind: "movement", fold: false, free: true },
  expand: { kind: "movement", fold: false, free: true },
  slice: { kind: "movement", fold: false, free: true },
  pad: { kind: "movement", fold: false, free: true },
  concat: { kind: "movement", fold: false, free: true },
  matmul: { kind: "contraction", fold: false, free: false },
  gather: { kind: "lookup", fold: false, free: false },
  write_slot: { kind: "state", fold: false, free: false },
  barrier: { kind: "identity", fold: false, free: true },
} as const satisfies { readonly [O in Op]: { readonly kind: string; readonly fold: boolean; readonly free: boolean } };

export type OpKind = (typeof OP_TRAITS)[Op]["kind"];
/** The ops of one kind, as a type: a table over them (a render rule per unary op) is then complete or a type error. */
export type OpsOfKind<K extends OpKind> = { [O in Op]: (typeof OP_TRAITS)[O]["kind"] extends K ? O : never }[Op];
export type FoldableOp = { [O in Op]: (typeof OP_TRAITS)[O]["fold"] extends true ? O : never }[Op];
export const opsOfKind = <K extends OpKind>(...kinds: K[]): OpsOfKind<K>[] =>
  OPS.filter((o): o is OpsOfKind<K> => (kinds as readonly OpKind[]).includes(OP_TRAITS[o].kind));

export type DType = "f32" | "i32";

export type InitRule =
  | { readonly kind: "zeros" }
  | { readonly kind: "ones" }
  | { readonly kind: "const"; readonly value: number }
  | { readonly kind: "normal"; readonly std: number; readonly mean: number }
  | { readonly kind: "uniform"; readonly bound: number }
  | { readonly kind: "xavier" };

/** Attributes each op carries; part of the hash-cons key. */
export interface OpAttrs {
  input: { readonly name: string; readonly shape: Shape; readonly dtype: DType };
  param: { readonly name: string; readonly shape: Shape; readonly init: InitRule; readonly trainable: boolean };
  const: { readonly value: number };
  size: { readonly dim: Dim };
  arange: { readonly n: Dim };
  neg: {};
  recip: {};
  exp: {};
  log: {};
  sqrt: {};
  sin: {};
  cos: {};
  tanh: {};
  erf: {};
  cast: { readonly dtype: DType };
  add: {};
  mul: {};
  max: {};
  cmplt: {};
  cmpeq: {};
  where: {};
  /** `salt`: a u32 of the call site, so two dropout sites fed the same key and counters draw different numbers */
  hash: { readonly salt: number };
  sum: { readonly axis: number };
  /** `detached`: the max a softmax subtracts for stability; softmax is shift-invariant, so no gradient flows through it */
  rmax: { readonly axis: number; readonly detached?: boolean };
  reshape: { readonly shape: Shape };
  permute: { readonly perm: readonly number[] };
  expand: { readonly shape: Shape };
  slice: { readonly start: readonly Dim[]; readonly end: readonly Dim[] };
  pad: { readonly before: readonly Dim[]; readonly after: readonly Dim[] };
  concat: { readonly axis: number };
  matmul: {};
  gather: {};
  /**
   * `write_slot(old, x, pos)`: old with x (size 1 along `axis`) written at index pos[b]
   * along `axis` of batch row b. A plan writes it in place over `old` (a cache that no
   * later kernel reads), so a decode step moves one slot, not the whole cache.
   */
  write_slot: { readonly axis: number };
  /**
   * `barrier(x)` is x. A training step that recomputes a layer in its backward reads the
   * layer's saved input through it, so the recomputed nodes differ from the forward's
   * (hash-consing would otherwise merge them back) and no rewrite looks through it.
   */
  barrier: {};
}

export interface Node<O extends Op = Op> {
  readonly id: number;
  readonly op: O;
  readonly src: readonly Node[];
  readonly attrs: OpAttrs[O];
  readonly shape: Shape;
  readonly dtype: DType;
  /** hash-cons key: op, attrs and source ids */
  readonly key: string;
}

export function attrsKey(attrs: object): string {
  return JSON.stringify(attrs, (_k, v: unknown) => {
    if (typeof v === "object" && v !== null && "terms" in v) return dimStr(v as Dim);
    // JSON writes NaN and ±Infinity as null and -0 as 0: spell them out, or the consts would merge
    if (typeof v === "number" && (!Number.isFinite(v) || Object.is(v, -0))) return Object.is(v, -0) ? "-0" : String(v);
    return v;
  });
}

/** Printed form of a node's attributes, for dumps and diagnostics. */
export function attrsText(n: Node): string {
  const a = n.attrs as Record<string, unknown>;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(a)) {
    if (k === "shape" && (n.op === "input" || n.op === "param")) continue;
    if (Array.isArray(v)) parts.push(`${k}=${k === "perm" ? `[${v.join(",")}]` : shapeStr(v as Dim[])}`);
    else if (typeof v === "object" && v !== null && "terms" in v) parts.push(`${k}=${dimStr(v as Dim)}`);
    else if (typeof v === "object" && v !== null) parts.push(`${k}=${attrsKey(v)}`);
    else parts.push(`${k}=${typeof v === "string" ? JSON.stringify(v) : String(v)}`);
  }
  return parts.join(" ");
}

export type Provenance = ReadonlyMap<number, Span>;
