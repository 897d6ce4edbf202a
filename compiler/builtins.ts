import type { Span } from "../grammar/source.ts";
import { type Dim, dimDivExact, dimMul, dimStr, shapeStr } from "./dims.ts";
import type { Node } from "./ir.ts";
import { ShapeError } from "./shape-rules.ts";
import { cached, type DecodingContext, once, positions } from "./decoding.ts";
import { dropout } from "./dropout.ts";
import type { TensorOps } from "./tensor-ops.ts";
import { boolV, floatV, intV, tensorV, type Value } from "./values.ts";

/** Problems with a builtin's arguments (not shapes); the elaborator locates them. */
export class ArgError extends Error {
  constructor(
    message: string,
    readonly span?: Span,
  ) {
    super(message);
  }
}

export interface ArgValue {
  readonly value: Value;
  readonly span: Span;
}

/** Positional and named arguments of one builtin call, with typed accessors. */
export class BuiltinArgs {
  private readonly used = new Set<string>();
  constructor(
    readonly fn: string,
    private readonly params: readonly string[],
    readonly positional: readonly ArgValue[],
    private readonly named: ReadonlyMap<string, ArgValue>,
    private readonly toTensor: (v: Value, span: Span) => Node,
  ) {}

  get(name: string): ArgValue | undefined {
    const i = this.params.indexOf(name);
    this.used.add(name);
    return this.named.get(name) ?? (i >= 0 ? this.positional[i] : undefined);
  }
  private need(name: string): ArgValue {
    const a = this.get(name);
    if (!a) throw new ArgError(`${this.fn}() needs argument \`${name}\``);
    return a;
  }
  tensor(name: string): Node {
    const a = this.need(name);
    return this.toTensor(a.value, a.span);
  }
  value(name: string): Value {
    return this.need(name).value;
  }
  dim(name: string, def?: Dim): Dim {
    const a = this.get(name);
    if (!a) {
      if (def === undefined) throw new ArgError(`${this.fn}() needs argument \`${name}\``);
      return def;
    }
    if (a.value.kind !== "int") throw new ArgError(`argument \`${name}\` of ${this.fn}() must be an int`, a.span);
    return a.value.value;
  }
  int(name: string, def?: number): number {
    const d = this.dim(name, def);
    const a = this.get(name);
    if (typeof d !== "number") throw new ArgError(`argument \`${name}\` of ${this.fn}() must be a constant int, got ${dimStr(d)}`, a?.span);
    return d;
  }
  number(name: string, def?: number): number {
    const a = this.get(name);
    if (!a) {
      if (def === undefined) throw new ArgError(`${this.fn}() needs argument \`${name}\``);
      return def;
    }
    if (a.value.kind === "float") return a.value.value;
    if (a.value.kind === "int" && typeof a.value.value === "number") return a.value.value;
    throw new ArgError(`argument \`${name}\` of ${this.fn}() must be a number`, a.span);
  }
  bool(name: string, def: boolean): boolean {
    const a = this.get(name);
    if (!a) return def;
    if (a.value.kind !== "bool") throw new ArgError(`argument \`${name}\` of ${this.fn}() must be true or false`, a.span);
    return a.value.value;
  }
  string(name: string, def?: string): string {
    const a = this.get(name);
    if (!a) {
      if (def === undefined) throw new ArgError(`${this.fn}() needs argument \`${name}\``);
      return def;
    }
    if (a.value.kind !== "string") throw new ArgError(`argument \`${name}\` of ${this.fn}() must be a string`, a.span);
    return a.value.value;
  }
  dims(name: string): Dim[] {
    const a = this.need(name);
    if (a.value.kind !== "list" || a.value.items.some((i) => i.kind !== "int"))
      throw new ArgError(`argument \`${name}\` of ${this.fn}() must be a list of ints, like [B, T, d]`, a.span);
    return a.value.items.map((i) => (i as { value: Dim }).value);
  }
  ints(name: string): number[] {
    return this.dims(name).map((d) => {
      if (typeof d !== "number") throw new ArgError(`argument \`${name}\` of ${this.fn}() must hold constant ints`);
      return d;
    });
  }
  /** all positional arguments from `from` on, lists flattened: for concat(a, b, c) */
  rest(from: number): Node[] {
    const out: Node[] = [];
    for (const a of this.positional.slice(from)) {
      if (a.value.kind === "list") for (const v of a.value.items) out.push(this.toTensor(v, a.span));
      else out.push(this.toTensor(a.value, a.span));
    }
    return out;
  }
  /** named arguments the builtin never asked for */
  unknownNamed(): string[] {
    return [...this.named.keys()].filter((k) => !this.used.has(k));
  }
}

/** What a builtin sees of the elaborator: the decoding mode (compiler/decoding.ts) and, for dropout, training. */
export interface BuiltinContext extends DecodingContext {
  /** elaborated for a training step (ElaborateOptions.training): dropout drops */
  readonly training: boolean;
  /** the `dropout_seed` input and a salt of this dropout call's own (compiler/dropout.ts) */
  dropoutStream(): { readonly seed: Node; readonly salt: number };
}

type Impl = (a: BuiltinArgs, t: TensorOps, ctx: BuiltinContext) => Value;

interface Builtin {
  /** parameter names in positional order; `...` marks a variadic tail */
  readonly params: readonly string[];
  readonly impl: Impl;
  /** computes at compile time when every argument is a number */
  readonly scalar?: (x: number) => number;
}

const T = (n: Node): Value => tensorV(n);

function mathFn(f: (t: TensorOps, x: Node) => Node, scalar?: (x: number) => number): Builtin {
  return { params: ["x"], impl: (a, t) => T(f(t, a.tensor("x"))), scalar };
}

// σ(x) = ½·tanh(x/2) + ½ rather than 1/(1+e^-x): the same function, but its gradient stays
// finite in f32 (e^-x overflows to inf for x < -88, and reverse mode then forms 0·inf = NaN)
const sigmoid = (t: TensorOps, x: Node) => t.add(t.mul(t.unary("tanh", t.mul(x, t.scalar(0.5))), t.scalar(0.5)), t.scalar(0.5));
const gelu = (t: TensorOps, x: Node) => t.mul(t.mul(x, t.scalar(0.5)), t.add(t.scalar(1), t.unary("erf", t.mul(x, t.scalar(Math.SQRT1_2)))));

const activations: Record<string, (t: TensorOps, x: Node) => Node> = {
  silu: (t, x) => t.mul(x, sigmoid(t, x)),
  gelu,
  quick_gelu: (t, x) => t.mul(x, sigmoid(t, t.mul(x, t.scalar(1.702)))),
  // SigLIP's: ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
  gelu_pytorch_tanh: (t, x) =>
    t.mul(
      t.mul(x, t.scalar(0.5)),
      t.add(t.scalar(1), t.unary("tanh", t.mul(t.add(x, t.mul(t.mul(t.mul(x, x), x), t.scalar(0.044715))), t.scalar(Math.sqrt(2 / Math.PI))))),
    ),
  relu: (t, x) => t.binary("max", x, t.scalar(0)),
  sigmoid,
  tanh: (t, x) => t.unary("tanh", x),
  identity: (_t, x) => x,
};

/** split the last dim into heads: [..., N, h*dh] -> [..., h, N, dh] */
function splitHeads(t: TensorOps, x: Node, heads: number): Node {
  const r = x.shape.length;
  if (r < 2) throw new ShapeError(`split_heads needs rank ≥ 2, got ${shapeStr(x.shape)}`);
  const dh = dimDivExact(x.shape[r - 1], heads);
  if (dh === undefined) throw new ShapeError(`split_heads: last dim ${dimStr(x.shape[r - 1])} of ${shapeStr(x.shape)} is not divisible by ${heads} heads`);
  const y = t.reshape(x, [...x.shape.slice(0, r - 1), heads, dh]);
  return t.permute(y, [...Array(r - 2).keys(), r - 1, r - 2, r]);
}

function mergeHeads(t: TensorOps, x: Node): Node {
  const r = x.shape.length;
  if (r < 3) throw new ShapeError(`merge_heads needs rank ≥ 3, got ${shapeStr(x.shape)}`);
  const y = t.permute(x, [...Array(r - 3).keys(), r - 2, r - 3, r - 1]);
  const d = dimMul(x.shape[r - 3], x.shape[r - 1]);
  if (d === undefined) throw new ShapeError(`merge_heads: cannot multiply symbolic dims`);
  return t.reshape(y, [...y.shape.slice(0, r - 2), d]);
}

/** [B, C, H, W] -> [B, (H/p)*(W/p), C*p*p], patch-major, like a stride-p conv's input */
function patches(t: TensorOps, x: Node, p: number): Node {
  if (x.shape.length !== 4) throw new ShapeError(`patches expects an image batch [B, C, H, W], got ${shapeStr(x.shape)}`);
  const [b, c, h, w] = x.shape;
  const hp = dimDivExact(h, p);
  const wp = dimDivExact(w, p);
  if (hp === undefined || wp === undefined) throw new ShapeError(`image size ${dimStr(h)}x${dimStr(w)} is not divisible by patch size ${p}`);
  const y = t.permute(t.reshape(x, [b, c, hp, p, wp, p]), [0, 2, 4, 1, 3, 5]);
  const n = dimMul(hp, wp);
  const k = dimMul(c, p * p);
  if (n === undefined || k === undefined) throw new ShapeError(`patches needs constant image sizes`);
  return t.reshape(y, [b, n, k]);
}

export const builtins: Record<string, Builtin> = {
  exp: mathFn((t, x) => t.unary("exp", x), Math.exp),
  log: mathFn((t, x) => t.unary("log", x), Math.log),
  sqrt: mathFn((t, x) => t.unary("sqrt", x), Math.sqrt),
  rsqrt: mathFn(
    (t, x) => t.unary("recip", t.unary("sqrt", x)),
    (x) => 1 / Math.sqrt(x),
  ),
  sin: mathFn((t, x) => t.unary("sin", x), Math.sin),
  cos: mathFn((t, x) => t.unary("cos", x), Math.cos),
  tanh: mathFn((t, x) => t.unary("tanh", x), Math.tanh),
  erf: mathFn((t, x) => t.unary("erf", x)),
  sigmoid: mathFn(sigmoid),
  silu: mathFn(activations.silu),
  gelu: mathFn(gelu),
  quick_gelu: mathFn(activations.quick_gelu),
  relu: mathFn(activations.relu),
  activation: {
    params: ["x", "name"],
    impl: (a, t) => {
      const name = a.string("name");
      const f = activations[name];
      if (!f) throw new ArgError(`unknown activation "${name}"; known: ${Object.keys(activations).join(", ")}`, a.get("name")?.span);
      return T(f(t, a.tensor("x")));
    },
  },
  softmax: { params: ["x", "axis"], impl: (a, t) => T(t.softmax(a.tensor("x"), a.int("axis", -1))) },
  sum: { params: ["x", "axis", "keepdim"], impl: (a, t) => T(t.sum(a.tensor("x"), a.int("axis"), a.bool("keepdim", false))) },
  mean: { params: ["x", "axis", "keepdim"], impl: (a, t) => T(t.mean(a.tensor("x"), a.int("axis"), a.bool("keepdim", false))) },
  max: { params: ["x", "axis", "keepdim"], impl: (a, t) => T(t.max(a.tensor("x"), a.int("axis"), a.bool("keepdim", false))) },
  maximum: { params: ["a", "b"], impl: (a, t) => T(t.binary("max", a.tensor("a"), a.tensor("b"))) },
  where: { params: ["cond", "a", "b"], impl: (a, t) => T(t.where(a.tensor("cond"), a.tensor("a"), a.tensor("b"))) },
  reshape: { params: ["x", "shape"], impl: (a, t) => T(t.reshape(a.tensor("x"), a.dims("shape"))) },
  permute: { params: ["x", "perm"], impl: (a, t) => T(t.permute(a.tensor("x"), a.ints("perm"))) },
  transpose: {
    params: ["x", "a", "b"],
    impl: (a, t) => {
      const x = a.tensor("x");
      const r = x.shape.length;
      const [i, j] = [t.axis(a.int("a"), r), t.axis(a.int("b"), r)];
      const perm = [...Array(r).keys()];
      [perm[i], perm[j]] = [perm[j], perm[i]];
      return T(t.permute(x, perm));
    },
  },
  unsqueeze: { params: ["x", "axis"], impl: (a, t) => T(t.unsqueeze(a.tensor("x"), a.int("axis"))) },
  squeeze: { params: ["x", "axis"], impl: (a, t) => T(t.squeeze(a.tensor("x"), a.int("axis"))) },
  expand: { params: ["x", "shape"], impl: (a, t) => T(t.expand(a.tensor("x"), a.dims("shape"))) },
  concat: { params: ["...", "axis"], impl: (a, t) => T(t.concat(a.rest(0), a.int("axis", 0))) },
  stack: { params: ["...", "axis"], impl: (a, t) => T(t.stack(a.rest(0), a.int("axis", 0))) },
  pad: { params: ["x", "axis", "before", "after"], impl: (a, t) => T(t.pad(a.tensor("x"), a.int("axis"), a.dim("before", 0), a.dim("after", 0))) },
  arange: { params: ["n"], impl: (a, t) => T(t.arange(a.dim("n"))) },
  zeros: { params: ["shape"], impl: (a, t) => T(t.expand(t.scalar(0), a.dims("shape"))) },
  ones: { params: ["shape"], impl: (a, t) => T(t.expand(t.scalar(1), a.dims("shape"))) },
  full: { params: ["shape", "value"], impl: (a, t) => T(t.expand(t.scalar(a.number("value")), a.dims("shape"))) },
  gather: { params: ["table", "index"], impl: (a, t) => T(t.gather(a.tensor("table"), a.tensor("index"))) },
  float: { params: ["x"], impl: (a, t) => T(t.cast(a.tensor("x"), "f32")) },
  // incremental decoding (compiler/decoding.ts): identities in training
  positions: { params: ["x", "axis"], impl: (a, t, ctx) => T(positions(t, ctx, a.tensor("x"), a.int("axis"))) },
  cached: { params: ["x", "axis"], impl: (a, t, ctx) => T(cached(t, ctx, a.tensor("x"), a.int("axis"))) },
  once: { params: ["x"], impl: (a, _t, ctx) => T(once(ctx, a.tensor("x"))) },
  decoding: { params: [], impl: (_a, _t, ctx) => boolV(ctx.mode === "decode") },
  // compiler/dropout.ts: drops only in a model elaborated for training, else exactly x
  dropout: {
    params: ["x", "p"],
    impl: (a, t, ctx) => {
      const x = a.tensor("x");
      const p = a.number("p");
      if (!(p >= 0 && p < 1)) throw new ArgError(`dropout() needs a probability p with 0 <= p < 1, got ${p}`, a.get("p")?.span);
      if (x.dtype !== "f32") throw new ArgError(`dropout() needs a float tensor, got an int one`, a.get("x")?.span);
      if (!ctx.training || p === 0) return T(x);
      const { seed, salt } = ctx.dropoutStream();
      return T(dropout(t, x, p, seed, salt));
    },
  },
  patches: { params: ["image", "size"], impl: (a, t) => T(patches(t, a.tensor("image"), a.int("size"))) },
  split_heads: { params: ["x", "heads"], impl: (a, t) => T(splitHeads(t, a.tensor("x"), a.int("heads"))) },
  merge_heads: { params: ["x"], impl: (a, t) => T(mergeHeads(t, a.tensor("x"))) },
  repeat_interleave: {
    params: ["x", "n", "axis"],
    impl: (a, t) => {
      const x = a.tensor("x");
      const n = a.int("n");
      const ax = t.axis(a.int("axis", 0), x.shape.length);
      if (n === 1) return T(x);
      const u = t.unsqueeze(x, ax + 1);
      const e = t.expand(
        u,
        u.shape.map((d, i) => (i === ax + 1 ? n : d)),
      );
      const merged = dimMul(x.shape[ax], n);
      if (merged === undefined) throw new ShapeError(`repeat_interleave on a symbolic axis`);
      return T(
        t.reshape(
          e,
          x.shape.map((d, i) => (i === ax ? merged : d)),
        ),
      );
    },
  },
  size: {
    params: ["x", "axis"],
    impl: (a, t) => {
      const x = a.tensor("x");
      return intV(x.shape[t.axis(a.int("axis"), x.shape.length)]);
    },
  },
  /** a precondition in the model author's words: `require(slots >= N, "...")` */
  require: {
    params: ["cond", "message"],
    impl: (a) => {
      if (!a.bool("cond", false)) throw new ArgError(a.string("message", "requirement failed"));
      return boolV(true);
    },
  },
  pow: {
    params: ["x", "y"],
    impl: (a) => floatV(Math.pow(a.number("x"), a.number("y"))),
  },
};

export const builtinNames = new Set(Object.keys(builtins));
