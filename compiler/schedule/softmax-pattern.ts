import type { Node } from "../ir.ts";

const unwrap = (n: Node): Node => (n.op === "expand" || n.op === "reshape" ? unwrap(n.src[0]) : n);

/** `mul(E, expand(recip(sum(E, last))))`, `E = exp(S + expand(neg(rmax(S, last))))`: S, or undefined. */
export function softmaxScores(p: Node, rank: number): { s: Node; e: Node; parts: Node[] } | undefined {
  if (p.op !== "mul") return undefined;
  for (const [e, x] of [
    [p.src[0], p.src[1]],
    [p.src[1], p.src[0]],
  ]) {
    if (e.op !== "exp") continue;
    const recip = unwrap(x);
    const sum = recip.op === "recip" ? unwrap(recip.src[0]) : undefined;
    if (!sum || sum.op !== "sum" || sum.src[0] !== e || (sum.attrs as { axis: number }).axis !== rank - 1) continue;
    const add = e.src[0];
    if (add.op !== "add") continue;
    for (const [sNode, y] of [
      [add.src[0], add.src[1]],
      [add.src[1], add.src[0]],
    ]) {
      let m = unwrap(y);
      if (m.op !== "neg") continue;
      m = unwrap(m.src[0]);
      if (m.op === "rmax" && m.src[0] === sNode && (m.attrs as { axis: number }).axis === rank - 1) return { s: sNode, e, parts: [p, e, add, sum, recip, m] };
    }
  }
  return undefined;
}
