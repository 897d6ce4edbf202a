import { type Shape, dimEq } from "../dims.ts";
import type { GraphBuilder } from "../graph.ts";
import type { DType, Node } from "../ir.ts";

/**
 * Helpers shared by `simplify` and `fold-constants`.
 *
 * A "scalar constant view" is a node whose every element is one known number: a
 * `const`, or a `const` seen through ops that only move or replicate elements
 * (reshape, expand, permute, slice, pad with all-zero widths), or through `cast`
 * (to i32: the interpreter truncates; to f32: the identity). The elaborator writes
 * `x * 2` as `mul(x, expand(reshape(const 2)))`, so this is the form constants have.
 */

const VIEW_DEPTH = 32;

export function scalarConst(n: Node, depth = 0): number | undefined {
  if (depth > VIEW_DEPTH) return undefined;
  switch (n.op) {
    case "const":
      return (n as Node<"const">).attrs.value;
    case "reshape":
    case "expand":
    case "permute":
    case "slice":
      return scalarConst(n.src[0], depth + 1);
    case "pad": {
      const { before, after } = (n as Node<"pad">).attrs;
      return [...before, ...after].every((w) => dimEq(w, 0)) ? scalarConst(n.src[0], depth + 1) : undefined;
    }
    case "cast": {
      const v = scalarConst(n.src[0], depth + 1);
      return v === undefined ? undefined : (n as Node<"cast">).attrs.dtype === "i32" ? Math.trunc(v) : v;
    }
    default:
      return undefined;
  }
}

/**
 * The canonical node holding `value` everywhere, with the given shape and dtype:
 * `const` (f32) or `cast(const, i32)`, reshaped to rank-many 1s, then expanded.
 * An i32 value must be whole (or ±Inf/NaN), so the cast truncates nothing.
 */
export function constOf(g: GraphBuilder, value: number, like: { readonly shape: Shape; readonly dtype: DType }): Node {
  let n: Node = g.make("const", [], { value });
  if (like.dtype === "i32") {
    if (Number.isFinite(value) && !Object.is(Math.trunc(value), value)) throw new Error(`constOf: ${value} is not a whole number, cannot be an i32 constant`);
    n = g.make("cast", [n], { dtype: "i32" });
  }
  if (like.shape.length === 0) return n;
  n = g.make("reshape", [n], { shape: like.shape.map(() => 1) });
  return like.shape.every((d) => d === 1) ? n : g.make("expand", [n], { shape: like.shape });
}

/**
 * Conservative: false only when no element of `n` can be -0 under the interpreter's
 * float64 semantics. `x + 0` is not `x` when x is -0 (it is +0, and `recip` tells them
 * apart: -Inf vs +Inf), so `simplify` drops a `+ 0` only where this says false.
 *
 * Facts used (IEEE 754, round-to-nearest): a sum is -0 only if both addends are -0;
 * `sum` and `matmul` accumulate from +0, so they never yield -0; comparisons yield
 * 0/1; exp, log and cos never return -0 (exp(x) > 0 or +0; log(1) = +0; cos has no
 * zeros in float64); arange counts up from +0. (`size` is not trusted: evaluating a
 * linear dim like `-2*T` at T = 0 gives -0.)
 */
const negZeroCache = new WeakMap<Node, boolean>();

export function mayBeNegZero(root: Node): boolean {
  // iterative post-order: the chains it walks (adds, movement) can be long
  const stack: Node[] = [root];
  while (stack.length) {
    const n = stack[stack.length - 1];
    if (negZeroCache.has(n)) {
      stack.pop();
      continue;
    }
    const { deps, all } = negZeroDeps(n);
    const missing = deps.filter((s) => !negZeroCache.has(s));
    if (missing.length) {
      stack.push(...missing);
      continue;
    }
    const vals = deps.map((s) => negZeroCache.get(s)!);
    negZeroCache.set(n, typeof all === "boolean" ? all : all === "every" ? vals.every(Boolean) : vals.some(Boolean));
    stack.pop();
  }
  return negZeroCache.get(root)!;
}

/** Which sources decide whether `n` may hold -0, and how; a boolean is a fixed answer. */
function negZeroDeps(n: Node): { deps: readonly Node[]; all: boolean | "every" | "some" } {
  switch (n.op) {
    case "const":
      return { deps: [], all: Object.is((n as Node<"const">).attrs.value, -0) };
    case "arange":
    case "cmplt":
    case "cmpeq":
    case "hash": // a multiple of 2^-24 from +0
    case "sum":
    case "matmul":
    case "exp":
    case "log":
    case "cos":
      return { deps: [], all: false };
    case "add":
      return { deps: n.src, all: "every" };
    case "where":
      return { deps: n.src.slice(1), all: "some" };
    case "gather":
      return { deps: n.src.slice(0, 1), all: "some" };
    case "reshape":
    case "expand":
    case "permute":
    case "slice":
    case "pad": // pads with +0
    case "concat":
    case "max":
    case "rmax": // starts from -Inf, returns an element
      return { deps: n.src, all: "some" };
    default:
      // input, param, size, neg, recip, sqrt, sin, tanh, erf, mul, cast (trunc(-0.5) = -0)
      return { deps: [], all: true };
  }
}
