import { shapeEval } from "../compiler/dims.ts";
import type { Node, Op } from "../compiler/ir.ts";
import { stridesOf } from "../compiler/tensor.ts";

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
};

const UNARY: Partial<Record<Op, (x: string) => string>> = {
  neg: (x) => `(-${x})`,
  recip: (x) => `(1.0 / ${x})`,
  exp: (x) => `exp(${x})`,
  log: (x) => `log(${x})`,
  sqrt: (x) => `sqrt(${x})`,
  sin: (x) => `sin(${x})`,
  cos: (x) => `cos(${x})`,
  // WGSL's tanh overflows to NaN for large |x| on some drivers; clamp keeps it exact in f32
  tanh: (x) => `tanh(clamp(${x}, -15.0, 15.0))`,
  erf: (x) => `erf_(${x})`,
};

const BINARY: Partial<Record<Op, (a: string, b: string, t: string) => string>> = {
  add: (a, b) => `(${a} + ${b})`,
  mul: (a, b) => `(${a} * ${b})`,
  max: (a, b) => `max(${a}, ${b})`,
  cmplt: (a, b) => `select(0.0, 1.0, ${a} < ${b})`,
  cmpeq: (a, b) => `select(0.0, 1.0, ${a} == ${b})`,
};

/**
 * An index known to equal `(base / stride) % mod` (mod Infinity: no modulo). Index
 * strings are made by digitText and looked up here, so the text alone identifies its
 * digit: the cache can be shared by all renderers.
 */
interface Digit {
  readonly base: string;
  readonly stride: number;
  readonly mod: number;
}
const DIGITS = new Map<string, Digit>();

const atom = (e: string) => (/^[A-Za-z_][A-Za-z0-9_.]*$/.test(e) ? e : `(${e})`);

function digitText(d: Digit): string {
  if (d.stride === 1 && d.mod === Infinity) return d.base;
  const text = `(${d.base}${d.stride === 1 ? "" : ` / ${d.stride}u`}${d.mod === Infinity ? "" : ` % ${d.mod}u`})`;
  DIGITS.set(text, d);
  return text;
}

export const wgslType = (n: Node) => (n.dtype === "i32" ? "i32" : "f32");

export class Renderer {
  readonly lines: string[] = [];
  readonly helpers = new Set<string>();
  /** per index variable, where concats along it switch parts (see RenderContext.ranges) */
  readonly concatSplits = new Map<string, Set<number>>();
  private memo = new Map<string, string>();
  private next = 0;

  constructor(
    private readonly ctx: RenderContext,
    private indent = "  ",
    private readonly prefix = "v",
  ) {}

  private shape(n: Node): readonly number[] {
    return this.ctx.shapes.get(n) ?? shapeEval(n.shape, this.dims);
  }

  private get dims(): Readonly<Record<string, number>> {
    return this.ctx.dims ?? {};
  }

  private bind(expr: string, type: string): string {
    const name = `${this.prefix}${this.next++}`;
    this.lines.push(`${this.indent}let ${name}: ${type} = ${expr};`);
    return name;
  }

  /**
   * The row-major linear offset of `idx` in a tensor of `shape`. Adjacent indices that
   * are consecutive digits of one value (see Digit) fold back into that value, so a
   * load at the kernel's own layout is `buf[lin]`, not a chain of divisions.
   */
  static linear(idx: readonly string[], shape: readonly number[]): string {
    const st = stridesOf(shape);
    const terms: string[] = [];
    let run: { d: Digit; stride: number } | undefined;
    const flush = () => {
      if (run) terms.push(run.stride === 1 ? digitText(run.d) : `${digitText(run.d)} * ${run.stride}u`);
      run = undefined;
    };
    idx.forEach((e, i) => {
      if (shape[i] === 1) return; // contributes nothing, and the axes around it stay adjacent
      const d = DIGITS.get(e);
      if (d && run && d.base === run.d.base && d.mod === shape[i] && run.d.stride === d.stride * d.mod) {
        run = { d: { base: d.base, stride: d.stride, mod: run.d.mod * d.mod }, stride: st[i] };
        return;
      }
      flush();
      if (d) run = { d, stride: st[i] };
      else terms.push(st[i] === 1 ? e : `${e} * ${st[i]}u`);
    });
    flush();
    return terms.length ? terms.join(" + ") : "0u";
  }

  /** Splits a linear offset into per-axis indices of `shape`. */
  static delinear(lin: string, shape: readonly number[]): string[] {
    const st = stridesOf(shape);
    const known = DIGITS.get(lin);
    const opaque: Digit = { base: atom(lin), stride: 1, mod: Infinity };
    return shape.map((n, i) => {
      if (n === 1) return "0u";
      // the outermost axis needs no modulo: the kernel bounds `lin`
      const mod = i === 0 ? Infinity : n;
      // ((b / s) % m / st) % n is (b / (s st)) % n only when st n divides m
      const d = known && (known.mod === Infinity || known.mod % (st[i] * (i === 0 ? 1 : n)) === 0) ? known : opaque;
      return digitText({ base: d.base, stride: d.stride * st[i], mod: i === 0 ? d.mod / st[i] : mod });
    });
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
  value(n: Node, idx: readonly string[]): string {
    const given = this.ctx.given?.get(n);
    if (given) return given;
    const key = `${n.id}|${idx.join(",")}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    const out = this.compute(n, idx);
    this.memo.set(key, out);
    return out;
  }

  private compute(n: Node, idx: readonly string[]): string {
    const buf = this.ctx.bufferVar(n);
    if (buf) return this.bind(`${buf}[${Renderer.linear(idx, this.shape(n))}]`, wgslType(n));
    const a = n.attrs as Record<string, unknown>;
    const src = n.src;
    const u = UNARY[n.op];
    if (u) {
      if (n.op === "erf") this.helpers.add("erf_");
      return this.bind(u(this.value(src[0], idx)), "f32");
    }
    const b = BINARY[n.op];
    if (b) return this.bind(b(this.value(src[0], idx), this.value(src[1], idx), wgslType(n)), wgslType(n));
    switch (n.op) {
      case "const": {
        const lit = f32Literal(a.value as number);
        if (lit.includes("nonfinite_bits")) this.helpers.add("nonfinite_");
        return lit;
      }
      case "size":
        return f32Literal(shapeEval([a.dim as never], this.dims)[0]);
      case "arange":
        return `f32(${idx[0]})`;
      case "cast":
        return this.bind(`${wgslType(n)}(${this.value(src[0], idx)})`, wgslType(n));
      case "where":
        // the condition may be i32 (the shape rule allows it): compare with a zero of its own type
        return this.bind(`select(${this.value(src[2], idx)}, ${this.value(src[1], idx)}, ${this.value(src[0], idx)} != ${wgslType(src[0])}(0))`, wgslType(n));
      case "reshape": {
        const out = this.shape(n);
        return this.value(src[0], Renderer.delinear(Renderer.linear(idx, out), this.shape(src[0])));
      }
      case "permute": {
        const perm = a.perm as readonly number[];
        const si = new Array<string>(perm.length);
        perm.forEach((p, i) => (si[p] = idx[i]));
        return this.value(src[0], si);
      }
      case "expand": {
        const from = this.shape(src[0]);
        return this.value(src[0], idx.map((e, i) => (from[i] === 1 ? "0u" : e)));
      }
      case "slice": {
        const start = shapeEval(a.start as Node["shape"], this.dims);
        return this.value(src[0], idx.map((e, i) => (start[i] === 0 ? e : `(${e} + ${start[i]}u)`)));
      }
      case "pad": {
        const before = shapeEval(a.before as Node["shape"], this.dims);
        const from = this.shape(src[0]);
        const conds: string[] = [];
        const si = idx.map((e, i) => {
          if (before[i] === 0 && from[i] === this.shape(n)[i]) return e;
          conds.push(`(${e} >= ${before[i]}u && ${e} < ${before[i] + from[i]}u)`);
          return `u32(clamp(i32(${e}) - ${before[i]}, 0, ${from[i] - 1}))`;
        });
        const v = this.value(src[0], si);
        return conds.length ? this.bind(`select(${wgslType(n)}(0), ${v}, ${conds.join(" && ")})`, wgslType(n)) : v;
      }
      case "concat": {
        // Branch to the one part that holds the element: selecting among all parts would
        // load every part (with clamped, opaque indices) for each element.
        if (src.length === 1) return this.value(src[0], idx);
        const axis = a.axis as number;
        const offsets = src.map((_, k) => src.slice(0, k).reduce((acc, part) => acc + this.shape(part)[axis], 0));
        const range = this.ctx.ranges?.get(idx[axis]);
        const within = range && offsets.findIndex((o, k) => o <= range[0] && range[1] <= o + this.shape(src[k])[axis]);
        if (range && within !== undefined && within >= 0) return this.value(src[within], idx.map((e, i) => (i !== axis || offsets[within] === 0 ? e : `(${e} - ${offsets[within]}u)`)));
        if (/^[A-Za-z_]\w*$/.test(idx[axis])) {
          const splits = this.concatSplits.get(idx[axis]) ?? new Set<number>();
          offsets.slice(1).forEach((o) => splits.add(o));
          this.concatSplits.set(idx[axis], splits);
        }
        const type = wgslType(n);
        const name = `${this.prefix}${this.next++}`;
        this.lines.push(`${this.indent}var ${name}: ${type};`);
        let off = 0;
        src.forEach((s, k) => {
          const o = off;
          off += this.shape(s)[axis];
          const si = idx.map((e, i) => (i !== axis || o === 0 ? e : `(${e} - ${o}u)`));
          const head = k === src.length - 1 ? "else" : `${k === 0 ? "" : "else "}if (${idx[axis]} < ${off}u)`;
          this.branch(head, k === 0, () => `${name} = ${this.value(s, si)};`);
        });
        return name;
      }
      case "gather": {
        const [table, ids] = src;
        const ir = this.shape(ids).length;
        const rows = this.shape(table)[0];
        const row = this.bind(`u32(clamp(i32(${this.value(ids, idx.slice(0, ir))}), 0, ${rows - 1}))`, "u32");
        return this.value(table, [row, ...idx.slice(ir)]);
      }
      default:
        throw new Error(`internal: ${n.op} cannot be rendered inline (it should have been materialized)`);
    }
  }
}
