import type { Node } from "./ir.ts";
import { LEAF_CONST } from "./op-classes.ts";

// Loops over a stack, not recursion: an inline tree can be thousands of nodes deep.

/** Nodes of the inline tree under `root` (stopping at buffers and constants), in depth-first pre-order. */
export function inlineNodes(root: Node, isMat: (n: Node) => boolean): Node[] {
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || (isMat(n) && n.op !== "matmul") || LEAF_CONST.has(n.op)) continue;
    seen.add(n);
    if (n.op !== "matmul") for (let i = n.src.length - 1; i >= 0; i--) stack.push(n.src[i]);
  }
  return [...seen];
}

/** Whether the inline tree of `end` holds a matmul other than `mm` (one accumulator per kernel). */
export function hasMatmulBelow(end: Node, mm: Node, mat: ReadonlySet<Node>): boolean {
  const seen = new Set<Node>();
  const stack: [Node, boolean][] = [[end, true]];
  while (stack.length) {
    const [x, top] = stack.pop()!;
    if (x === mm || seen.has(x) || (!top && mat.has(x))) continue;
    seen.add(x);
    if (x.op === "matmul" && !top) return true;
    for (const s of x.src) stack.push([s, false]);
  }
  return false;
}
