import type { Expr } from "./ast.ts";

/** The expressions directly inside `e`, in source order. */
export function subExprs(e: Expr): Expr[] {
  switch (e.kind) {
    case "unary":
    case "transpose":
      return [e.operand];
    case "binary":
      return [e.left, e.right];
    case "if":
      return [e.cond, e.then, e.else];
    case "call":
      return [e.callee, ...e.args.map((a) => a.value)];
    case "index":
      return [e.target, ...e.items.flatMap((i) => (i.kind === "at" ? [i.value] : i.kind === "slice" ? [i.start, i.end].filter((x) => x !== undefined) : []))];
    case "member":
      return [e.target];
    case "list":
      return [...e.items];
    case "site":
      return [...e.args.map((a) => a.value), e.fallback];
    default:
      return [];
  }
}

/**
 * Calls `visit` on `root` and every expression inside it, parents first, in source
 * order. Iterative, because trees can be tall without being nested in the text: a
 * generated 4,000-term sum `a + a + ... + a` is a left-deep chain 4,000 nodes high.
 */
export function forEachExpr(root: Expr, visit: (e: Expr) => void): void {
  const pending = [root];
  for (let e = pending.pop(); e; e = pending.pop()) {
    visit(e);
    // a loop, not push(...): a list literal can hold more items than a call takes arguments
    const inner = subExprs(e);
    for (let i = inner.length - 1; i >= 0; i--) pending.push(inner[i]);
  }
}
