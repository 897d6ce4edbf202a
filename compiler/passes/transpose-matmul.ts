import { topoOrder } from "../graph.ts";
import type { GraphBuilder } from "../graph.ts";
import type { Node } from "../ir.ts";
import type { Pass } from "../pipeline.ts";
import { type Rule, rewriteGraph, rule } from "../rewrite.ts";
import { swapLast } from "../tensor-ops.ts";
import { FOLD_RULES } from "./fold-constants.ts";
import { SIMPLIFY_RULES } from "./simplify.ts";

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

const isSwapLast = (perm: readonly number[]) => perm.length >= 2 && swapLast(perm.length).every((p, i) => p === perm[i]);

const transposeLast = (g: GraphBuilder, x: Node) => g.make("permute", [x], { perm: swapLast(x.shape.length) });

/**
 * The earlier passes' rules run alongside, so the operand transposes the rule builds
 * come out as those passes leave movement ops: composed into the operand's own permute
 * (gone where they cancel), a constant folded. They are exact as well, so wherever
 * else they still fire the values stay the same.
 */
const NORMALISE: readonly Rule[] = [...FOLD_RULES, ...SIMPLIFY_RULES];

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
      const out = rewriteGraph(nodes, g, [transposeMatmulRule(useCounts(nodes)), ...NORMALISE]);
      if (out.every((n, i) => n === nodes[i])) break;
      nodes = out;
    }
    return roots.map((r, i) => ({ name: r.name, node: nodes[i] }));
  },
};
