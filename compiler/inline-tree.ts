import type { Node } from "./ir.ts";
import { LEAF_CONST } from "./op-classes.ts";

/** Nodes of the inline tree under `root` (stopping at buffers and constants). */
export function inlineNodes(root: Node, isMat: (n: Node) => boolean): Node[] {
  const seen = new Set<Node>();
  const visit = (n: Node) => {
    if (seen.has(n) || (isMat(n) && n.op !== "matmul") || LEAF_CONST.has(n.op)) return;
    seen.add(n);
    if (n.op !== "matmul") n.src.forEach(visit);
  };
  visit(root);
  return [...seen];
}

/** Whether the inline tree of `end` holds a matmul other than `mm` (one accumulator per kernel). */
export function hasMatmulBelow(end: Node, mm: Node, mat: ReadonlySet<Node>): boolean {
  const seen = new Set<Node>();
  const visit = (x: Node, top: boolean): boolean => {
    if (x === mm || seen.has(x) || (!top && mat.has(x))) return false;
    seen.add(x);
    if (x.op === "matmul" && !top) return true;
    return x.src.some((s) => visit(s, false));
  };
  return visit(end, true);
}
