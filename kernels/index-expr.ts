/**
 * Index math of generated kernels as a small expression IR (u32 values): built from
 * structure, simplified as it is built (adjacent digits of one value fold back into it),
 * rendered to WGSL text once per node. The vec4 lane analysis reads the structure; no
 * WGSL text is ever parsed back. Every node renders as itself in a template string.
 */

import { stridesOf } from "../compiler/tensor.ts";

/** WGSL text that needs no parentheses to be an operand. */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_.]*$/;

abstract class IxNode {
  abstract readonly text: string;
  /** whether the value depends on the index variable `name` */
  abstract mentions(name: string): boolean;
  toString(): string {
    return this.text;
  }
}

/** An index variable or a WGSL `let` (lin, i, a gathered row). */
export class IxVar extends IxNode {
  constructor(readonly name: string) {
    super();
  }
  get text(): string {
    return this.name;
  }
  mentions(name: string): boolean {
    return this.name === name;
  }
}

export class IxConst extends IxNode {
  readonly text: string;
  constructor(readonly value: number) {
    super();
    this.text = `${value}u`;
  }
  mentions(): boolean {
    return false;
  }
}

/** `(base / stride) % mod` (mod Infinity: no modulo): one digit of a mixed-radix value. */
export class IxDigit extends IxNode {
  readonly text: string;
  constructor(
    readonly base: Ix,
    readonly stride: number,
    readonly mod: number,
  ) {
    super();
    this.text = `(${operand(base)}${stride === 1 ? "" : ` / ${stride}u`}${mod === Infinity ? "" : ` % ${mod}u`})`;
  }
  mentions(name: string): boolean {
    return this.base.mentions(name);
  }
}

/** Σ x·scale: a row-major offset. */
export class IxSum extends IxNode {
  readonly text: string;
  constructor(readonly terms: readonly { readonly x: Ix; readonly scale: number }[]) {
    super();
    this.text = terms.map((t) => (t.scale === 1 ? t.x.text : `${t.x.text} * ${t.scale}u`)).join(" + ");
  }
  mentions(name: string): boolean {
    return this.terms.some((t) => t.x.mentions(name));
  }
}

/** x + by (by < 0: x − |by|): a slice's start, a concat part's or pad's offset. */
export class IxShift extends IxNode {
  readonly text: string;
  constructor(
    readonly x: Ix,
    readonly by: number,
  ) {
    super();
    this.text = by >= 0 ? `(${x.text} + ${by}u)` : `(${x.text} - ${-by}u)`;
  }
  mentions(name: string): boolean {
    return this.x.mentions(name);
  }
}

/** An operand in parentheses (what a digit of a whole sum collapses to). */
export class IxParen extends IxNode {
  readonly text: string;
  constructor(readonly x: Ix) {
    super();
    this.text = `(${x.text})`;
  }
  mentions(name: string): boolean {
    return this.x.mentions(name);
  }
}

/** Any other WGSL computing an index from `of` (a clamped pad index, a slot read at run time). */
export class IxOpaque extends IxNode {
  constructor(
    readonly text: string,
    readonly of: readonly Ix[],
  ) {
    super();
  }
  mentions(name: string): boolean {
    return this.of.some((x) => x.mentions(name));
  }
}

export type Ix = IxVar | IxConst | IxDigit | IxSum | IxShift | IxParen | IxOpaque;

/** What callers pass: an Ix, or WGSL text (a variable name, `0u`, or an expression of no index variable). */
export type IxLike = Ix | string;

export function ix(e: IxLike): Ix {
  if (typeof e !== "string") return e;
  if (IDENTIFIER.test(e)) return new IxVar(e);
  const c = /^(\d+)u$/.exec(e);
  return c ? new IxConst(Number(c[1])) : new IxOpaque(e, []);
}

export const ZERO = new IxConst(0);

function operand(x: Ix): string {
  return IDENTIFIER.test(x.text) ? x.text : `(${x.text})`;
}

/** `(base / stride) % mod`, or `base` as an operand when that is all it is. */
export function digit(base: Ix, stride: number, mod: number): Ix {
  if (stride === 1 && mod === Infinity) return IDENTIFIER.test(base.text) ? base : new IxParen(base);
  return new IxDigit(base, stride, mod);
}

/**
 * The row-major linear offset of `idx` in a tensor of `shape`. Adjacent indices that are
 * consecutive digits of one value fold back into that value, so a load at the kernel's own
 * layout is `buf[lin]`, not a chain of divisions.
 */
export function linear(idx: readonly IxLike[], shape: readonly number[]): Ix {
  const st = stridesOf(shape);
  const terms: { x: Ix; scale: number }[] = [];
  let run: { d: IxDigit; stride: number } | undefined;
  const flush = () => {
    if (run) terms.push({ x: digit(run.d.base, run.d.stride, run.d.mod), scale: run.stride });
    run = undefined;
  };
  idx.forEach((like, i) => {
    if (shape[i] === 1) return; // contributes nothing, and the axes around it stay adjacent
    const e = ix(like);
    const d = e instanceof IxDigit ? e : undefined;
    if (d && run && d.base.text === run.d.base.text && d.mod === shape[i] && run.d.stride === d.stride * d.mod) {
      run = { d: new IxDigit(d.base, d.stride, run.d.mod * d.mod), stride: st[i] };
      return;
    }
    flush();
    if (d) run = { d, stride: st[i] };
    else terms.push({ x: e, scale: st[i] });
  });
  flush();
  if (!terms.length) return ZERO;
  return terms.length === 1 && terms[0].scale === 1 ? terms[0].x : new IxSum(terms);
}

/** Splits a linear offset into per-axis indices of `shape`. */
export function delinear(like: IxLike, shape: readonly number[]): Ix[] {
  const lin = ix(like);
  const st = stridesOf(shape);
  const known = lin instanceof IxDigit ? lin : undefined;
  return shape.map((n, i) => {
    if (n === 1) return ZERO;
    // the outermost axis needs no modulo: the kernel bounds `lin`
    const mod = i === 0 ? Infinity : n;
    // ((b / s) % m / st) % n is (b / (s st)) % n only when st n divides m
    const d = known && (known.mod === Infinity || known.mod % (st[i] * (i === 0 ? 1 : n)) === 0) ? known : { base: lin, stride: 1, mod: Infinity };
    return digit(d.base, d.stride * st[i], i === 0 ? d.mod / st[i] : mod);
  });
}

/**
 * How an index varies across the 4 elements of vector mode, whose first element's linear
 * index is the variable `base` (a multiple of 4): not at all ("same"), as first + 0..3
 * ("lane"), or otherwise ("bad").
 */
export function laneOf(e: Ix, base: string): "same" | "lane" | "bad" {
  if (!e.mentions(base)) return "same";
  if (e instanceof IxVar) return "lane";
  if (e instanceof IxParen) return laneOf(e.x, base);
  if (e instanceof IxDigit) {
    const of = laneOf(e.base, base);
    if (of !== "lane") return of;
    // a stride of 4k sees one value; a stride of 1 under a modulus 4 divides sees 4 consecutive ones
    if (e.stride % 4 === 0) return "same";
    return e.stride === 1 && (e.mod === Infinity || e.mod % 4 === 0) ? "lane" : "bad";
  }
  if (e instanceof IxShift) {
    const l = laneOf(e.x, base);
    return l === "lane" && e.by % 4 !== 0 ? "bad" : l;
  }
  if (e instanceof IxSum) {
    // first + 0..3 when one unscaled term is and every other term is a multiple of 4
    let lanes = 0;
    let aligned = true;
    for (const t of e.terms) {
      const l = laneOf(t.x, base);
      if (l === "bad" || (l === "lane" && t.scale !== 1)) return "bad";
      if (l === "lane") lanes++;
      else if (t.scale % 4 !== 0) aligned = false;
    }
    if (lanes === 0) return "same";
    return lanes === 1 && aligned ? "lane" : "bad";
  }
  return "bad";
}

/** The value of `e` with its variables from `env` (exact integers; for tests and checks). Opaque WGSL has no value here. */
export function evaluate(e: Ix, env: Readonly<Record<string, number>>): number {
  if (e instanceof IxVar) {
    const v = env[e.name];
    if (v === undefined) throw new Error(`evaluate: no value for ${e.name}`);
    return v;
  }
  if (e instanceof IxConst) return e.value;
  if (e instanceof IxDigit) {
    const q = Math.floor(evaluate(e.base, env) / e.stride);
    return e.mod === Infinity ? q : q % e.mod;
  }
  if (e instanceof IxSum) return e.terms.reduce((a, t) => a + evaluate(t.x, env) * t.scale, 0);
  if (e instanceof IxShift) return evaluate(e.x, env) + e.by;
  if (e instanceof IxParen) return evaluate(e.x, env);
  throw new Error(`evaluate: opaque WGSL ${e.text}`);
}
