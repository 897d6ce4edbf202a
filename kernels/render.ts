import { shapeEval } from "../compiler/dims.ts";
import { saltMix } from "../compiler/hash.ts";
import { type Node, OP_TRAITS, type Op, type OpsOfKind } from "../compiler/ir.ts";
import { delinear, type Ix, IxOpaque, IxShift, IxVar, type IxLike, ix, laneOf, linear, ZERO } from "./index-expr.ts";

/**
 * Renders an inline IR tree as WGSL statements computing one element at a symbolic
 * index. Movement ops are pure index math; materialized nodes are buffer loads.
 * Shapes are concrete: plans are specialised to the run-time dims.
 */
export interface RenderContext {
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  /** WGSL variable of a node's buffer, if it is materialized */
  bufferVar(n: Node): string | undefined;
  /** a node whose value is already in a WGSL variable (a matmul accumulator) */
  readonly given?: ReadonlyMap<Node, string>;
  /**
   * Run-time dims, for attributes that are symbolic (`size` of T, a slice starting at T,
   * a pad of T): without them those nodes cannot be rendered. Shapes come from `shapes`.
   */
  readonly dims?: Readonly<Record<string, number>>;
  /**
   * Index variables known to lie in [lo, hi) (a reduction loop split at concat
   * boundaries): a concat along such an index reads its one part directly, unbranched.
   */
  readonly ranges?: ReadonlyMap<string, readonly [number, number]>;
  /**
   * Vector mode: the kernel computes 4 consecutive elements along the innermost axis at
   * once, and the index variable named here is the first one's linear index (a multiple
   * of 4). Values are vec4 where they differ across the 4 elements; a load along the
   * innermost axis is one vec4 load. What cannot be computed that way (a lane-dependent
   * gather, pad or arange offset, an unaligned slice) throws Unvectorizable, and the
   * caller renders the scalar kernel instead.
   */
  readonly vector?: string;
  /** materialized nodes whose buffers hold f16 (frozen weights): loads widen them to f32 */
  readonly half?: ReadonlySet<Node>;
}

/** The tree cannot be rendered in vector mode (see RenderContext.vector). */
export class Unvectorizable extends Error {}

/** `render()`'s result, or undefined when it threw Unvectorizable (the caller renders scalar). */
export function tryVector<T>(render: () => T): T | undefined {
  try {
    return render();
  } catch (e) {
    if (e instanceof Unvectorizable) return undefined;
    throw e;
  }
}

/**
 * Marks a scalar load in vector mode, resolved by resolveScalarLoads once the kernel knows
 * whether the buffer is declared as vec4s (when some other load of it is a vector load).
 */
const scalarLoad = (buf: string, at: string) => `\u27e6${buf}|${at}\u27e7`;

/** Spells out the scalar loads of a vector-mode body: `vec4Buffers` are arrays of vec4. */
export function resolveScalarLoads(text: string, vec4Buffers: ReadonlySet<string>): string {
  return text.replace(/\u27e6(\w+)\|([^\u27e7]*)\u27e7/g, (_, buf: string, at: string) =>
    vec4Buffers.has(buf) ? `${buf}[(${at}) / 4u][(${at}) % 4u]` : `${buf}[${at}]`,
  );
}

/**
 * WGSL rejects non-finite values in constant expressions, so NaN and ±inf are made at
 * run time from a private variable's bits (see WGSL_HELPERS.nonfinite_).
 */
export function f32Literal(v: number): string {
  if (Number.isNaN(v)) return "bitcast<f32>(nonfinite_bits + 0x400000u)";
  if (v === Infinity || v > 3.4028234e38) return "bitcast<f32>(nonfinite_bits)";
  if (v === -Infinity || v < -3.4028234e38) return "bitcast<f32>(nonfinite_bits | 0x80000000u)";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return `${v}.0`;
  return `f32(${v.toPrecision(9)})`;
}

/** WGSL helpers a rendered body may call; appended once per module when used. */
export const WGSL_HELPERS: Record<string, string> = {
  nonfinite_: "var<private> nonfinite_bits: u32 = 0x7f800000u;",
  // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below f32 resolution of erf near 1.
  erf_: `fn erf_(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
  return select(-y, y, x >= 0.0);
}`,
  // x − 2πk with k = round(x / 2π), 2π in two parts (6.28125 is exact, so k · 6.28125 is too)
  angle_: `fn angle_(x: f32) -> f32 {
  let k = round(x * 0.15915494309189535);
  return (x - k * 6.28125) - k * 0.0019353071795864769;
}`,
  angle4_: `fn angle4_(x: vec4<f32>) -> vec4<f32> {
  let k = round(x * 0.15915494309189535);
  return (x - k * 6.28125) - k * 0.0019353071795864769;
}`,
  // compiler/hash.ts: the same u32 arithmetic as the interpreter's, so masks agree bit for bit
  hash_: `fn pcg_(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn hash_(key: i32, counter: i32, mix: u32) -> f32 {
  return f32(pcg_(bitcast<u32>(counter) + pcg_(bitcast<u32>(key) + mix)) >> 8u) * 5.9604644775390625e-8;
}`,
  hash4_: `fn pcg4_(v: vec4<u32>) -> vec4<u32> {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> vec4<u32>(28u)) + 4u)) ^ state) * 277803737u;
  return (word >> vec4<u32>(22u)) ^ word;
}
fn hash4_(key: vec4<i32>, counter: vec4<i32>, mix: u32) -> vec4<f32> {
  return vec4<f32>(pcg4_(bitcast<vec4<u32>>(counter) + pcg4_(bitcast<vec4<u32>>(key) + mix)) >> vec4<u32>(8u)) * 5.9604644775390625e-8;
}`,
  erf4_: `fn erf4_(x: vec4<f32>) -> vec4<f32> {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
  return select(-y, y, x >= vec4<f32>(0.0));
}`,
};

// one rule per op OP_TRAITS calls unary or binary: a new one without its rule is a type error
const UNARY: { readonly [O in OpsOfKind<"unary">]: (x: string) => string } = {
  neg: (x) => `(-${x})`,
  recip: (x) => `(1.0 / ${x})`,
  exp: (x) => `exp(${x})`,
  log: (x) => `log(${x})`,
  sqrt: (x) => `sqrt(${x})`,
  // WGSL bounds sin and cos only on [-π, π] (SwiftShader is off by 2e-4 at 40 rad): reduce first
  sin: (x) => `sin(angle_(${x}))`,
  cos: (x) => `cos(angle_(${x}))`,
  // WGSL's tanh overflows to NaN for large |x| on some drivers; clamp keeps it exact in f32
  tanh: (x) => `tanh(clamp(${x}, -15.0, 15.0))`,
  erf: (x) => `erf_(${x})`,
};

const BINARY: { readonly [O in OpsOfKind<"binary">]: (a: string, b: string, t: string) => string } = {
  add: (a, b) => `(${a} + ${b})`,
  mul: (a, b) => `(${a} * ${b})`,
  max: (a, b) => `max(${a}, ${b})`,
  cmplt: (a, b) => `select(0.0, 1.0, ${a} < ${b})`,
  cmpeq: (a, b) => `select(0.0, 1.0, ${a} == ${b})`,
};

export const wgslType = (n: Node) => (n.dtype === "i32" ? "i32" : "f32");

export class Renderer {
  readonly lines: string[] = [];
  readonly helpers = new Set<string>();
  /** per index variable, where concats along it switch parts (see RenderContext.ranges) */
  readonly concatSplits = new Map<string, Set<number>>();
  /** buffers read with vec4 loads (vector mode) */
  readonly vectorLoads = new Set<string>();
  private memo = new Map<string, string>();
  private next = 0;
  private readonly vectors = new Set<string>();

  constructor(
    private readonly ctx: RenderContext,
    private indent = "  ",
    private readonly prefix = "v",
  ) {}

  /** Declares a WGSL variable the caller provides (a matmul's accumulator in vector mode) a vec4. */
  vectorVariable(name: string): this {
    this.vectors.add(name);
    return this;
  }

  private shape(n: Node): readonly number[] {
    return this.ctx.shapes.get(n) ?? shapeEval(n.shape, this.dims);
  }

  private get dims(): Readonly<Record<string, number>> {
    return this.ctx.dims ?? {};
  }

  /** `vec`: the value is a vec4 of `type` (vector mode) */
  private bind(expr: string, type: string, vec = false): string {
    const name = `${this.prefix}${this.next++}`;
    this.lines.push(`${this.indent}let ${name}: ${vec ? `vec4<${type}>` : type} = ${expr};`);
    if (vec) this.vectors.add(name);
    return name;
  }

  /** Whether a rendered value is a vec4 (vector mode; a constant or uniform value is not). */
  isVector(e: string): boolean {
    return this.vectors.has(e);
  }

  /** `e` as a vec4 of `type` (vector mode): vectors stay, scalars are splat. */
  splat(e: string, type: string): string {
    return this.isVector(e) ? e : `vec4<${type}>(${e})`;
  }

  /** How an index varies across the 4 elements of vector mode (index-expr.ts `laneOf`). */
  private lane(e: Ix): "same" | "lane" | "bad" {
    return laneOf(e, this.ctx.vector!);
  }

  /** A buffer load; in vector mode a vec4 load along the innermost axis, or a scalar one. */
  private load(buf: string, n: Node, idx: readonly Ix[]): string {
    const shape = this.shape(n);
    const at = linear(idx, shape);
    const half = this.ctx.half?.has(n) ?? false;
    const widen = (load: string, vec: boolean) => (half ? `${vec ? "vec4<f32>" : "f32"}(${load})` : load);
    if (!this.ctx.vector) return this.bind(widen(`${buf}[${at}]`, false), wgslType(n));
    const lanes = idx.map((e, i) => (shape[i] === 1 ? "same" : this.lane(e)));
    const axis = lanes.indexOf("lane");
    if (lanes.includes("bad") || lanes.lastIndexOf("lane") !== axis || (axis >= 0 && (axis !== shape.length - 1 || shape[axis] % 4 !== 0)))
      throw new Unvectorizable(`${n.op} is read across the vector lanes`);
    if (axis < 0) return this.bind(widen(scalarLoad(buf, at.text), false), wgslType(n));
    this.vectorLoads.add(buf);
    return this.bind(widen(`${buf}[(${at}) / 4u]`, true), wgslType(n), true);
  }

  /** The row-major linear offset of `idx` in a tensor of `shape` (index-expr.ts). */
  static linear(idx: readonly IxLike[], shape: readonly number[]): Ix {
    return linear(idx, shape);
  }

  /** Splits a linear offset into per-axis indices of `shape` (index-expr.ts). */
  static delinear(lin: IxLike, shape: readonly number[]): Ix[] {
    return delinear(lin, shape);
  }

  /**
   * Renders `body` inside `head { … }` (chained onto the previous block with `} head`
   * unless `first`). What it computes is local to the block, so it is forgotten after.
   */
  private branch(head: string, first: boolean, body: () => string): void {
    const outer = { indent: this.indent, memo: this.memo };
    if (first) this.lines.push(`${outer.indent}${head} {`);
    else this.lines[this.lines.length - 1] = `${outer.indent}} ${head} {`;
    this.indent = `${outer.indent}  `;
    this.memo = new Map(outer.memo);
    this.lines.push(`${this.indent}${body()}`);
    this.indent = outer.indent;
    this.memo = outer.memo;
    this.lines.push(`${outer.indent}}`);
  }

  /** WGSL expression (usually a `let` name) for element `idx` of node `n`. */
  value(n: Node, index: readonly IxLike[]): string {
    const given = this.ctx.given?.get(n);
    if (given) return given;
    const idx = index.map(ix);
    const key = `${n.id}|${idx.map((e) => e.text).join(",")}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    const out = this.compute(n, idx);
    this.memo.set(key, out);
    return out;
  }

  private compute(n: Node, idx: readonly Ix[]): string {
    const buf = this.ctx.bufferVar(n);
    if (buf) return this.load(buf, n, idx);
    const a = n.attrs as Record<string, unknown>;
    const src = n.src;
    if (OP_TRAITS[n.op].kind === "identity") return this.value(src[0], idx);
    const u = (UNARY as Partial<Record<Op, (x: string) => string>>)[n.op];
    if (u) {
      const x = this.value(src[0], idx);
      const vec = this.isVector(x);
      if (n.op === "erf") this.helpers.add(vec ? "erf4_" : "erf_");
      if (vec && n.op === "erf") return this.bind(`erf4_(${x})`, "f32", true);
      if (n.op === "sin" || n.op === "cos") this.helpers.add(vec ? "angle4_" : "angle_");
      if (vec && (n.op === "sin" || n.op === "cos")) return this.bind(`${n.op}(angle4_(${x}))`, "f32", true);
      if (vec && n.op === "tanh") return this.bind(`tanh(clamp(${x}, vec4<f32>(-15.0), vec4<f32>(15.0)))`, "f32", true);
      return this.bind(u(x), "f32", vec);
    }
    const b = (BINARY as Partial<Record<Op, (a: string, b: string, t: string) => string>>)[n.op];
    if (b) {
      const [x, y] = [this.value(src[0], idx), this.value(src[1], idx)];
      if (!this.isVector(x) && !this.isVector(y)) return this.bind(b(x, y, wgslType(n)), wgslType(n));
      const [vx, vy] = [this.splat(x, wgslType(src[0])), this.splat(y, wgslType(src[1]))];
      const t = `vec4<${wgslType(n)}>`;
      const cmp = n.op === "cmplt" ? "<" : n.op === "cmpeq" ? "==" : undefined;
      return this.bind(cmp ? `select(${t}(0), ${t}(1), ${vx} ${cmp} ${vy})` : b(vx, vy, wgslType(n)), wgslType(n), true);
    }
    switch (n.op) {
      case "const": {
        const lit = f32Literal(a.value as number);
        if (lit.includes("nonfinite_bits")) this.helpers.add("nonfinite_");
        return lit;
      }
      case "size":
        return f32Literal(shapeEval([a.dim as never], this.dims)[0]);
      case "arange": {
        const l = this.ctx.vector ? this.lane(idx[0]) : "same";
        if (l === "bad") throw new Unvectorizable("arange across the vector lanes");
        return l === "lane" ? this.bind(`vec4<f32>(f32(${idx[0]})) + vec4<f32>(0.0, 1.0, 2.0, 3.0)`, "f32", true) : `f32(${idx[0]})`;
      }
      case "cast": {
        const x = this.value(src[0], idx);
        const vec = this.isVector(x);
        return this.bind(`${vec ? `vec4<${wgslType(n)}>` : wgslType(n)}(${x})`, wgslType(n), vec);
      }
      case "hash": {
        const [key, counter] = [this.value(src[0], idx), this.value(src[1], idx)];
        const mix = `${saltMix(a.salt as number)}u`;
        if (!this.isVector(key) && !this.isVector(counter)) {
          this.helpers.add("hash_");
          return this.bind(`hash_(${key}, ${counter}, ${mix})`, "f32");
        }
        this.helpers.add("hash4_");
        return this.bind(`hash4_(${this.splat(key, "i32")}, ${this.splat(counter, "i32")}, ${mix})`, "f32", true);
      }
      case "where": {
        // the condition may be i32 (the shape rule allows it): compare with a zero of its own type
        const [c, t, f] = src.map((x) => this.value(x, idx));
        if (![c, t, f].some((x) => this.isVector(x))) return this.bind(`select(${f}, ${t}, ${c} != ${wgslType(src[0])}(0))`, wgslType(n));
        const [ct, vt] = [wgslType(src[0]), wgslType(n)];
        return this.bind(`select(${this.splat(f, vt)}, ${this.splat(t, vt)}, ${this.splat(c, ct)} != vec4<${ct}>(${ct}(0)))`, vt, true);
      }
      case "reshape": {
        const out = this.shape(n);
        return this.value(src[0], delinear(linear(idx, out), this.shape(src[0])));
      }
      case "permute": {
        const perm = a.perm as readonly number[];
        const si = new Array<Ix>(perm.length);
        perm.forEach((p, i) => (si[p] = idx[i]));
        return this.value(src[0], si);
      }
      case "expand": {
        const from = this.shape(src[0]);
        return this.value(
          src[0],
          idx.map((e, i) => (from[i] === 1 ? ZERO : e)),
        );
      }
      case "slice": {
        const start = shapeEval(a.start as Node["shape"], this.dims);
        return this.value(
          src[0],
          idx.map((e, i) => (start[i] === 0 ? e : new IxShift(e, start[i]))),
        );
      }
      case "pad": {
        const before = shapeEval(a.before as Node["shape"], this.dims);
        const from = this.shape(src[0]);
        const conds: string[] = [];
        const si = idx.map((e, i) => {
          if (before[i] === 0 && from[i] === this.shape(n)[i]) return e;
          conds.push(`(${e} >= ${before[i]}u && ${e} < ${before[i] + from[i]}u)`);
          const l = this.ctx.vector ? this.lane(e) : "same";
          if (l === "same") return new IxOpaque(`u32(clamp(i32(${e}) - ${before[i]}, 0, ${from[i] - 1}))`, [e]);
          // along the vector: the 4 elements are all inside or all padding when the bounds are
          // multiples of 4; a padding vector's (wrapped) index is read but its value not used
          if (l === "bad" || before[i] % 4 !== 0 || from[i] % 4 !== 0) throw new Unvectorizable("pad boundary inside a vector");
          return before[i] === 0 ? e : new IxShift(e, -before[i]);
        });
        const v = this.value(src[0], si);
        return conds.length
          ? this.bind(`select(${this.isVector(v) ? `vec4<${wgslType(n)}>` : wgslType(n)}(0), ${v}, ${conds.join(" && ")})`, wgslType(n), this.isVector(v))
          : v;
      }
      case "concat": {
        // Branch to the one part that holds the element: selecting among all parts would
        // load every part (with clamped, opaque indices) for each element.
        if (src.length === 1) return this.value(src[0], idx);
        const axis = a.axis as number;
        const offsets = src.map((_, k) => src.slice(0, k).reduce((acc, part) => acc + this.shape(part)[axis], 0));
        const range = this.ctx.ranges?.get(idx[axis].text);
        const within = range && offsets.findIndex((o, k) => o <= range[0] && range[1] <= o + this.shape(src[k])[axis]);
        if (range && within !== undefined && within >= 0)
          return this.value(
            src[within],
            idx.map((e, i) => (i !== axis || offsets[within] === 0 ? e : new IxShift(e, -offsets[within]))),
          );
        const at = idx[axis];
        if (at instanceof IxVar) {
          const splits = this.concatSplits.get(at.name) ?? new Set<number>();
          offsets.slice(1).forEach((o) => splits.add(o));
          this.concatSplits.set(at.name, splits);
        }
        const type = wgslType(n);
        // vector mode: the 4 elements are in one part when its bounds are multiples of 4;
        // the value is a vec4 unless no index varies across them
        const lanes = this.ctx.vector ? idx.map((e) => this.lane(e)) : [];
        if (lanes[axis] === "bad" || (lanes[axis] === "lane" && offsets.some((o) => o % 4 !== 0)))
          throw new Unvectorizable("concat part boundary inside a vector");
        const vec = lanes.some((l) => l !== "same");
        const name = `${this.prefix}${this.next++}`;
        this.lines.push(`${this.indent}var ${name}: ${vec ? `vec4<${type}>` : type};`);
        if (vec) this.vectors.add(name);
        let off = 0;
        src.forEach((s, k) => {
          const o = off;
          off += this.shape(s)[axis];
          const si = idx.map((e, i) => (i !== axis || o === 0 ? e : new IxShift(e, -o)));
          const head = k === src.length - 1 ? "else" : `${k === 0 ? "" : "else "}if (${idx[axis]} < ${off}u)`;
          this.branch(head, k === 0, () => {
            const v = this.value(s, si);
            return `${name} = ${vec ? this.splat(v, type) : v};`;
          });
        });
        return name;
      }
      case "gather": {
        const [table, ids] = src;
        const ir = this.shape(ids).length;
        const rows = this.shape(table)[0];
        const id = this.value(ids, idx.slice(0, ir));
        if (this.isVector(id)) throw new Unvectorizable("gather of a different row per vector lane");
        const row = this.bind(`u32(clamp(i32(${id}), 0, ${rows - 1}))`, "u32");
        return this.value(table, [new IxVar(row), ...idx.slice(ir)]);
      }
      default:
        throw new Error(`internal: ${n.op} cannot be rendered inline (it should have been materialized)`);
    }
  }
}
