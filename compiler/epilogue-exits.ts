import { hasMatmulBelow, inlineNodes } from "./inline-tree.ts";
import type { Node } from "./ir.ts";
import { LEAF_CONST } from "./op-classes.ts";

/** Outputs one matmul epilogue may write (each is a binding). */
const MAX_EXITS = 3;

/** What the scheduler knows when it absorbs a matmul into an epilogue. */
export interface ExitContext {
  readonly order: readonly Node[];
  readonly users: ReadonlyMap<Node, readonly Node[]>;
  /** position in topological order */
  readonly position: ReadonlyMap<Node, number>;
  /** the nodes with a buffer so far */
  readonly mat: ReadonlySet<Node>;
  isRoot(n: Node): boolean;
}

/**
 * The exits of a matmul epilogue with several, or undefined. When no single exit closes
 * the elementwise region above matmul `n` (a value the epilogue computes feeds two
 * buffers: FFN memory keys Z + P_k and values Z + P_v from one projection), the exits are
 * the region's nodes used outside it, up to MAX_EXITS, each a value that needs a buffer
 * anyway (a matmul operand, an output): a split never adds one. Each exit's tree must
 * reach the region only through region nodes (no view of a value the kernel is still
 * writing), read no buffer computed from this matmul, feed no other exit and hold no
 * second matmul.
 */
export function severalExits(n: Node, region: ReadonlySet<Node>, c: ExitContext): Node[] | undefined {
  const isMat = (x: Node) => c.mat.has(x);
  const exits = c.order.filter((x) => x !== n && region.has(x) && (isMat(x) || c.isRoot(x) || (c.users.get(x) ?? []).some((u) => !region.has(u))));
  if (exits.length < 2 || exits.length > MAX_EXITS || exits.some((e) => !isMat(e) && !c.isRoot(e))) return undefined;
  // RMSNorm's sum of h·h, say: computed from this matmul's output, so not yet there
  if (exits.some((e) => buffersRead(e, region, isMat).some((x) => dependsOn(x, n, c.position)))) return undefined;
  // the kernel runs where its first exit is: what the others read must exist by then (a
  // layer recomputed for the backward reads this forward matmul, late)
  const at = c.position.get(exits[0])!;
  if (exits.some((e) => buffersRead(e, region, isMat).some((x) => x.op !== "input" && x.op !== "param" && c.position.get(x)! > at))) return undefined;
  const reachesRegion = (x: Node) => inlineNodes(x, isMat).some((y) => region.has(y));
  for (const x of region)
    if (x !== n && x.src.some((src) => !region.has(src) && !LEAF_CONST.has(src.op) && !isMat(src) && reachesRegion(src))) return undefined;
  const exitSet = new Set(exits);
  for (const e of exits) if (hasMatmulBelow(e, n, c.mat) || regionBelow(e, region).some((x) => exitSet.has(x))) return undefined;
  return exits;
}

/** Region nodes that `e` is computed from. */
function regionBelow(e: Node, region: ReadonlySet<Node>): Node[] {
  const below = new Set<Node>();
  const collect = (x: Node): void =>
    x.src.forEach((src) => {
      if (region.has(src) && !below.has(src)) {
        below.add(src);
        collect(src);
      }
    });
  collect(e);
  return [...below];
}

/** Buffers the inline tree of `e` reads, passing through the region's nodes. */
function buffersRead(e: Node, region: ReadonlySet<Node>, isMat: (n: Node) => boolean): Node[] {
  const found = new Set<Node>();
  // a loop over a stack, not recursion: an inline tree can be thousands of nodes deep
  const seen = new Set<Node>();
  const stack: [Node, boolean][] = [[e, true]];
  while (stack.length) {
    const [x, top] = stack.pop()!;
    if (seen.has(x) || LEAF_CONST.has(x.op)) continue;
    seen.add(x);
    if (!top && isMat(x) && !region.has(x)) {
      found.add(x);
      continue;
    }
    for (let i = x.src.length - 1; i >= 0; i--) stack.push([x.src[i], false]);
  }
  return [...found];
}

/** Whether `x` is computed from `target` (nodes before it in topological order cannot be). */
function dependsOn(x: Node, target: Node, position: ReadonlyMap<Node, number>): boolean {
  // iterative: the path from x down to target can cross most of a training graph
  const seen = new Set<Node>();
  const stack = [x];
  while (stack.length) {
    const y = stack.pop()!;
    if (y === target) return true;
    if (seen.has(y) || position.get(y)! < position.get(target)!) continue;
    seen.add(y);
    for (const s of y.src) stack.push(s);
  }
  return false;
}
