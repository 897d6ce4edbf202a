import { dimEq, shapeEq } from "../dims.ts";
import type { Node } from "../ir.ts";
import type { Pass } from "../pipeline.ts";
import { type Rule, rule, rulePass } from "../rewrite.ts";
import { mayBeNegZero, scalarConst } from "./const-view.ts";

/**
 * Algebraic identities that leave every value bit-identical under the float64
 * reference interpreter, NaN, ±Inf and -0 included. Each rule says why.
 *
 * Deliberately absent:
 * - `x * 0 → 0`: NaN * 0 and Inf * 0 are NaN, and -3 * 0 is -0.
 * - `x + 0 → x` when x may be -0: -0 + 0 is +0 (see `mayBeNegZero`).
 * - `recip(recip x) → x` is in `INEXACT_RULES`, not here: 1/(1/x) rounds twice
 *   (1/(1/49) is 49.00000000000001) and is 0 for |x| < 2^-1024, where 1/x overflows.
 */

const isZero = (v: number | undefined) => v === 0; // +0 or -0

/** Which operand of a commutative binary op is the scalar constant `pred` accepts. */
function otherThanConst(n: Node, pred: (v: number) => boolean): Node | undefined {
  const [a, b] = n.src;
  const vb = scalarConst(b);
  if (vb !== undefined && pred(vb)) return a;
  const va = scalarConst(a);
  if (va !== undefined && pred(va)) return b;
  return undefined;
}

export const SIMPLIFY_RULES: readonly Rule[] = [
  // x + (-0) is x for every x (-0 + -0 = -0). x + (+0) is x unless x is -0, which
  // mayBeNegZero rules out. Operands of add already have x's shape and dtype.
  rule("add-zero", ["add"], (n) => {
    const [a, b] = n.src;
    for (const [x, z] of [
      [a, b],
      [b, a],
    ] as const) {
      const v = scalarConst(z);
      if (isZero(v) && (Object.is(v, -0) || !mayBeNegZero(x))) return x;
    }
    return undefined;
  }),
  // x * 1 is exactly x in IEEE arithmetic: NaN stays NaN, ±Inf and ±0 keep their sign.
  rule("mul-one", ["mul"], (n) => otherThanConst(n, (v) => v === 1)),
  // negation only flips the sign bit: -(-x) is x bit for bit, NaN included.
  rule("neg-neg", ["neg"], (n) => (n.src[0].op === "neg" ? n.src[0].src[0] : undefined)),
  // reshape never reorders the row-major element sequence, so two reshapes are one;
  // the element count of x equals that of the outer shape (the inner one checked it).
  rule("reshape-reshape", ["reshape"], (n, g) => (n.src[0].op === "reshape" ? g.make("reshape", [n.src[0].src[0]], { shape: n.attrs.shape }) : undefined)),
  // a reshape to the shape x already has is the identity.
  rule("reshape-noop", ["reshape"], (n) => (shapeEq(n.src[0].shape, n.attrs.shape) ? n.src[0] : undefined)),
  // outer(inner(x))[j] reads inner axis q[j], which reads x axis p[q[j]]: one permute
  // with the composed permutation moves the same elements.
  rule("permute-permute", ["permute"], (n, g) => {
    const inner = n.src[0];
    if (inner.op !== "permute") return undefined;
    const p = (inner as Node<"permute">).attrs.perm;
    return g.make("permute", [inner.src[0]], { perm: n.attrs.perm.map((q) => p[q]) });
  }),
  // the identity permutation moves nothing.
  rule("permute-identity", ["permute"], (n) => (n.attrs.perm.every((p, i) => p === i) ? n.src[0] : undefined)),
  // expand only replicates size-1 axes; every axis of x is either already the final
  // size or 1, so expanding x straight to the outer shape replicates the same values.
  rule("expand-expand", ["expand"], (n, g) => (n.src[0].op === "expand" ? g.make("expand", [n.src[0].src[0]], { shape: n.attrs.shape }) : undefined)),
  // expanding to the shape x already has replicates nothing.
  rule("expand-noop", ["expand"], (n) => (shapeEq(n.src[0].shape, n.attrs.shape) ? n.src[0] : undefined)),
  // cast to f32 is the identity in the interpreter; cast to i32 truncates, and an i32
  // tensor already holds whole numbers (inputs by contract, everything else is built
  // from those with ops that keep whole numbers whole), so truncating again changes nothing.
  rule("cast-noop", ["cast"], (n) => (n.src[0].dtype === n.attrs.dtype ? n.src[0] : undefined)),
  // a slice from 0 to the full extent on every axis copies x unchanged.
  rule("slice-noop", ["slice"], (n) => {
    const s = n.src[0].shape;
    return n.attrs.start.every((d) => dimEq(d, 0)) && n.attrs.end.every((d, i) => dimEq(d, s[i])) ? n.src[0] : undefined;
  }),
  // padding by zero elements on every side adds nothing.
  rule("pad-noop", ["pad"], (n) => ([...n.attrs.before, ...n.attrs.after].every((d) => dimEq(d, 0)) ? n.src[0] : undefined)),
  // rmax over a size-1 axis folds one element into -Inf: max(-Inf, v) is v for every v
  // (NaN by the NaN rule, -Inf trivially), so it is x itself (keepdim: same shape).
  rule("rmax-size1", ["rmax"], (n) => (n.src[0].shape[n.attrs.axis] === 1 ? n.src[0] : undefined)),
  // sum over a size-1 axis is +0 + v, which is v except for v = -0.
  rule("sum-size1", ["sum"], (n) => (n.src[0].shape[n.attrs.axis] === 1 && !mayBeNegZero(n.src[0]) ? n.src[0] : undefined)),
];

/**
 * Rules that are right in real arithmetic but not bit-exact in float64; not in the
 * pipeline (every pass there preserves the reference interpreter's values exactly).
 */
export const INEXACT_RULES: readonly Rule[] = [
  // 1/(1/x) is x up to two roundings (it is x exactly for ±0, ±Inf, NaN and powers of
  // two), but 0 for subnormal |x| < 2^-1024, where 1/x overflows to Inf.
  rule("recip-recip", ["recip"], (n) => (n.src[0].op === "recip" ? n.src[0].src[0] : undefined)),
];

export const simplify: Pass = rulePass(
  "simplify",
  "algebraic identities (x+0, x*1, double neg, movement-op chains and no-ops, same-dtype casts, size-1 reductions), bit-exact",
  SIMPLIFY_RULES,
);
