import { type Dim, dimEq } from "../dims.ts";
import type { GraphBuilder } from "../graph.ts";
import { type EvalEnv, evalRules } from "../interpret.ts";
import { type FoldableOp, type Node, OP_TRAITS, OPS } from "../ir.ts";
import type { Pass } from "../pipeline.ts";
import { type Rule, rule, rulePass } from "../rewrite.ts";
import type { Tensor } from "../tensor.ts";
import { constOf, scalarConst } from "./const-view.ts";

/**
 * Constant folding. Every fold computes its value with the interpreter's own
 * `evalRules` (or, for reductions, the interpreter's own accumulation order), so the
 * folded graph evaluates to exactly what the original did, NaN/±Inf/-0 included.
 * Constants are scalars broadcast to a shape (see `scalarConst`); a folded result is
 * rebuilt in the canonical form `constOf` makes, with the node's shape and dtype.
 */

/** The ops OP_TRAITS marks foldable: elementwise on constant operands. */
const FOLDABLE: readonly FoldableOp[] = OPS.filter((o): o is FoldableOp => OP_TRAITS[o].fold);

const NO_ENV: EvalEnv = { dims: {}, inputs: new Map(), params: new Map() };

type AnyEval = (n: Node, src: readonly Tensor[], env: EvalEnv) => Tensor;

/** Evaluates elementwise `n` on scalar operand values with the interpreter's rule. */
function evalScalar(n: Node, operands: readonly number[]): number {
  const src = operands.map((v): Tensor => ({ shape: [], data: Float64Array.of(v) }));
  return (evalRules[n.op] as AnyEval)(n, src, NO_ENV).data[0];
}

/** Whether a linear dim is ≥ 1 for every value of its symbols (sizes, so ≥ 0). */
function atLeastOne(d: Dim): boolean {
  return typeof d === "number" ? d >= 1 : d.constant >= 1 && d.terms.every(([, c]) => c > 0);
}

/**
 * c = m * 2^e with |m| < 2^21: then k*c is exact for every k < 2^32, so adding c to
 * itself n times (what the interpreter does) equals the single product n * c.
 */
function smallDyadic(c: number): boolean {
  if (!Number.isFinite(c)) return false;
  let m = Math.abs(c);
  for (let i = 0; i < 1100 && !Number.isInteger(m); i++) m *= 2;
  while (m !== 0 && m % 2 === 0) m /= 2;
  return Number.isInteger(m) && m < 2 ** 21;
}

/** sum of a constant over an axis of length `len`: the interpreter's loop, from +0. */
function sumConst(g: GraphBuilder, n: Node<"sum">, c: number): Node | undefined {
  const len = n.src[0].shape[n.attrs.axis];
  if (typeof len === "number") {
    let acc = 0;
    for (let j = 0; j < len; j++) acc += c;
    return constOf(g, acc, n);
  }
  // symbolic length: +0 + (±0) + ... is +0 whatever the length
  if (c === 0) return constOf(g, 0, n);
  // n * c by a size node, when that is exactly the repeated sum and cannot be -0 (the
  // size is +0, not -0, at zero: its linear form has positive coefficients only)
  if (c > 0 && smallDyadic(c) && n.dtype === "f32" && len.constant >= 0 && len.terms.every(([, k]) => k > 0)) {
    const size = g.make("size", [], { dim: len });
    const total = c === 1 ? size : g.make("mul", [size, g.make("const", [], { value: c })], {});
    if (n.shape.length === 0) return total;
    const r = g.make("reshape", [total], { shape: n.shape.map(() => 1) });
    return n.shape.every((d) => d === 1) ? r : g.make("expand", [r], { shape: n.shape });
  }
  return undefined;
}

export const FOLD_RULES: readonly Rule[] = [
  // all operands constant: the result is the interpreter's value on them, broadcast.
  rule("fold-elementwise", FOLDABLE, (n, g) => {
    const vals = n.src.map((s) => scalarConst(s));
    if (vals.some((v) => v === undefined)) return undefined;
    return constOf(g, evalScalar(n, vals as number[]), n);
  }),
  // a movement op over a scalar constant (`permute(expand(reshape(const)))`, ...) holds
  // that constant everywhere; rebuild it in the one canonical form, so equal constants
  // become one node and chains of views collapse. No-op when already canonical.
  rule("const-view", ["reshape", "expand", "permute", "slice", "pad"], (n, g) => {
    const c = scalarConst(n);
    return c === undefined ? undefined : constOf(g, c, n);
  }),
  // where with a constant condition picks one branch everywhere (the interpreter
  // tests `c !== 0`, so NaN picks the first); branches already have the output shape.
  rule("where-const-cond", ["where"], (n) => {
    const c = scalarConst(n.src[0]);
    return c === undefined ? undefined : c !== 0 ? n.src[1] : n.src[2];
  }),
  // a size whose dim is a plain number is that number.
  rule("size-const", ["size"], (n, g) => (typeof n.attrs.dim === "number" ? g.make("const", [], { value: n.attrs.dim }) : undefined)),
  // sum of a constant over an axis: see sumConst.
  rule("sum-const", ["sum"], (n, g) => {
    const c = scalarConst(n.src[0]);
    return c === undefined ? undefined : sumConst(g, n, c);
  }),
  // rmax of a constant c over a non-empty axis is max(-Inf, c, c, ...) = c (NaN too);
  // over an empty axis it is the initial -Inf.
  rule("rmax-const", ["rmax"], (n, g) => {
    const c = scalarConst(n.src[0]);
    if (c === undefined) return undefined;
    const len = n.src[0].shape[n.attrs.axis];
    if (dimEq(len, 0)) return constOf(g, -Infinity, n);
    return atLeastOne(len) ? constOf(g, c, n) : undefined;
  }),
];

export const foldConstants: Pass = rulePass(
  "fold-constants",
  "evaluate elementwise ops, reductions and sizes whose operands are constants (with the interpreter's own rules)",
  FOLD_RULES,
);
