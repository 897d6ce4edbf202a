import type { Node } from "../ir.ts";
import { LEAF_CONST } from "../op-classes.ts";
import { epilogueInputs, type SchedulePass } from "../schedule.ts";
import { softmaxScores } from "./softmax-pattern.ts";
import { stridedView } from "./views.ts";

interface InlineTree {
  readonly inputs: Node[];
  /** the outermost matmul the tree computes (a chained first matmul lies below it) */
  readonly mm?: Node;
  readonly count: number;
  readonly seen: ReadonlySet<Node>;
}

/**
 * One kernel per materialized node that is computed (not an input or parameter, not an
 * epilogue's secondary exit), with its inline tree: the buffers it binds, what kind of
 * kernel it is (row group, chained matmul, matmul with epilogue, reduction, state write,
 * elementwise) and how many IR nodes it computes. A kernel that would bind more buffers
 * than the device allows marks its widest inline operand for a buffer, and the schedule
 * starts over (once for all such kernels).
 */
export const emitKernels: SchedulePass = {
  name: "kernels",
  description: "one kernel per buffer computed, with its inline tree and bindings (too many bindings: a buffer for the widest operand, and schedule again)",
  run(s) {
    const { mat, shapes, dims } = s;
    const isMat = (n: Node) => mat.has(n);
    const inlineTree = (out: Node): InlineTree => {
      const inputs = new Set<Node>();
      const seen = new Set<Node>();
      let mm: Node | undefined;
      const visit = (n: Node, top: boolean) => {
        if (!top && mat.has(n)) {
          inputs.add(n);
          return;
        }
        if (seen.has(n)) return;
        seen.add(n);
        if (!top && n.op === "matmul") mm ??= n;
        for (const x of n.src) visit(x, false);
      };
      visit(out, true);
      return { inputs: [...inputs], mm, count: seen.size, seen };
    };
    // the exits of one epilogue share its matmul and the values before the split: count them once
    const joinTrees = (ts: InlineTree[]) => ({
      inputs: [...new Set(ts.flatMap((t) => t.inputs))],
      mm: ts[0].mm,
      count: new Set(ts.flatMap((t) => [...t.seen])).size,
    });
    for (const n of s.order) {
      if (!mat.has(n) || n.op === "input" || n.op === "param" || s.secondaryExits.has(n)) continue;
      const also = s.extraExits.get(n);
      const tree = also ? joinTrees([n, ...also].map(inlineTree)) : inlineTree(n);
      const mmOf = n.op === "matmul" ? n : tree.mm;
      // a plain matmul kernel binds A and B at 1 and 2 and each epilogue buffer from 3 (again, if shared)
      const bindings =
        mmOf && !s.chains.has(mmOf)
          ? 3 + epilogueInputs({ output: n, inputs: tree.inputs, matmul: { node: mmOf }, ...(also ? { also } : {}) }).length + (also?.length ?? 0)
          : tree.inputs.length + 1;
      if (bindings > s.limits.maxBindings) {
        // Too many bindings: materialize the widest inline operand and reschedule, once for
        // every such kernel of this pass (a reschedule per kernel made 32 layers quadratic).
        const wide = n.src.filter((x) => !mat.has(x) && !LEAF_CONST.has(x.op)).sort((a, b) => inlineTree(b).inputs.length - inlineTree(a).inputs.length)[0];
        if (!wide) throw new Error(`kernel for ${n.op} needs ${bindings} bindings, more than the device's ${s.limits.maxBindings}`);
        s.tooWide.add(wide);
        continue;
      }
      const row = s.rowGroups.get(n);
      if (row) {
        const softmax = row.axis === shapes.get(n)!.length - 1 && softmaxScores(n, shapes.get(n)!.length) !== undefined;
        s.kernels.push({ kind: "row", output: n, inputs: tree.inputs, row: { axis: row.axis, reductions: row.reductions, softmax }, fused: tree.count });
        continue;
      }
      const mmNode = n.op === "matmul" ? n : tree.mm;
      const chain = mmNode && s.chains.get(mmNode);
      if (mmNode && chain) {
        s.kernels.push({ kind: "attention", output: n, inputs: tree.inputs, matmul: { node: mmNode, a: chain.q, b: chain.v }, chain, fused: tree.count });
      } else if (mmNode) {
        const a = stridedView(mmNode.src[0], isMat, shapes, dims)!;
        const b = stridedView(mmNode.src[1], isMat, shapes, dims)!;
        const ins = new Set(tree.inputs);
        ins.add(a.base);
        ins.add(b.base);
        const sumAxis = s.sumFolds.get(n);
        s.kernels.push({
          kind: "matmul",
          output: n,
          inputs: [...ins],
          matmul: { node: mmNode, a, b, ...(sumAxis === undefined ? {} : { sumAxis }) },
          ...(also ? { also } : {}),
          fused: tree.count,
        });
      } else
        s.kernels.push({
          kind: n.op === "sum" || n.op === "rmax" ? "reduce" : n.op === "write_slot" ? "write-slot" : "elementwise",
          output: n,
          inputs: tree.inputs,
          fused: tree.count,
        });
    }
  },
};
