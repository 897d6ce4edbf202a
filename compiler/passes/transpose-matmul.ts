import { topoOrder } from "../graph.ts";
import type { GraphBuilder } from "../graph.ts";
import type { Node } from "../ir.ts";
import type { Pass } from "../pipeline.ts";
import { type Rule, rewriteGraph, rule } from "../rewrite.ts";
import { constOf, scalarConst } from "./const-view.ts";

/**
 * (A·B)ᵀ = Bᵀ·Aᵀ: a matmul whose only reader takes it transposed (last two axes
 * swapped) computes the transposed product instead. Backward passes are full of these
 * (the gradient of x·Kᵀ with respect to K is (xᵀ·G)ᵀ). A matmul kernel writes C
 * contiguous, and the operand transposes are only strides, so afterwards the reader
 * walks memory in order, can use vec4 loads and may fuse into the matmul's epilogue,
 * where before it read C column by column.
 *
 * Bit-exact under the reference interpreter: each output element is the same products
 * (b·a = a·b in IEEE arithmetic) summed in the same k order.
 *
 * Only when the transpose is the matmul's sole use (a root counts as a use): otherwise
 * both products would be computed.
 */

/** The permutation of rank r that swaps the last two axes. */
export function swapLast(r: number): number[] {
  return [...Array(r - 2).keys(), r - 1, r - 2];
}

const isSwapLast = (perm: readonly number[]) => perm.length >= 2 && swapLast(perm.length).every((p, i) => p === perm[i]);

/**
 * xᵀ over the last two axes in the form the earlier passes leave: composed into x's own
 * permute (none left if they cancel), a constant as fold-constants writes one.
 */
function transposeLast(g: GraphBuilder, x: Node): Node {
  const swap = swapLast(x.shape.length);
  const c = scalarConst(x);
  if (c !== undefined) return constOf(g, c, { shape: swap.map((a) => x.shape[a]), dtype: x.dtype });
  if (x.op !== "permute") return g.make("permute", [x], { perm: swap });
  const inner = (x as Node<"permute">).attrs.perm;
  const perm = swap.map((q) => inner[q]);
  return perm.every((p, i) => p === i) ? x.src[0] : g.make("permute", [x.src[0]], { perm });
}

/** How many times each node is read (by a node's sources or as a root) under `roots`. */
function useCounts(roots: readonly Node[]): Map<number, number> {
  const uses = new Map<number, number>();
  const use = (n: Node) => uses.set(n.id, (uses.get(n.id) ?? 0) + 1);
  for (const n of topoOrder(roots)) n.src.forEach(use);
  roots.forEach(use);
  return uses;
}

/**
 * The rule, given the use counts of the graph it rewrites. A matmul rebuilt during the
 * rewrite (a source changed) has no count and is left alone; the pass repeats instead.
 */
export function transposeMatmulRule(uses: ReadonlyMap<number, number>): Rule {
  return rule("transpose-matmul", ["permute"], (n, g) => {
    const mm = n.src[0];
    if (mm.op !== "matmul" || !isSwapLast(n.attrs.perm) || uses.get(mm.id) !== 1) return undefined;
    const [a, b] = mm.src;
    return g.make("matmul", [transposeLast(g, b), transposeLast(g, a)], {});
  });
}

export const transposeMatmul: Pass = {
  name: "transpose-matmul",
  description: "a matmul read only transposed computes Bᵀ·Aᵀ instead, so its reader walks memory in order (bit-exact)",
  run(roots, g) {
    let nodes = roots.map((r) => r.node);
    // each round fires at least the lowest remaining sites (whose matmuls were not
    // rebuilt), so it ends within as many rounds as sites are stacked on each other
    for (;;) {
      const out = rewriteGraph(nodes, g, [transposeMatmulRule(useCounts(nodes))]);
      if (out.every((n, i) => n === nodes[i])) break;
      nodes = out;
    }
    return roots.map((r, i) => ({ name: r.name, node: nodes[i] }));
  },
};
