import type { Node, Op } from "../ir.ts";
import { isFree, LEAF_CONST, MOVEMENT } from "../op-classes.ts";
import type { SchedulePass } from "../schedule.ts";
import { numel } from "../tensor.ts";

const ALWAYS = new Set<Op>(["input", "param", "sum", "rmax", "write_slot"]);

/** The deepest inline tree a kernel computes; far above any real model's (a few dozen), far below the stack's. */
const MAX_INLINE_DEPTH = 128;

/** Recomputing up to this many ops per element is cheaper than a kernel and a round trip through memory. */
const RECOMPUTE_BUDGET = 4;

/** Arithmetic ops per element to recompute `n` inline (index math counts as free). */
function inlineCost(n: Node, isMat: (n: Node) => boolean, memo: Map<Node, number>): number {
  if (isMat(n) || LEAF_CONST.has(n.op)) return 0;
  const hit = memo.get(n);
  if (hit !== undefined) return hit;
  // an element of a concat comes from one part only
  const parts = n.src.map((s) => inlineCost(s, isMat, memo));
  let c = n.op === "concat" ? Math.max(0, ...parts) : parts.reduce((a, b) => a + b, 0);
  if (!isFree(n.op)) c += 1;
  memo.set(n, c);
  return c;
}

export const materializeSources: SchedulePass = {
  name: "sources",
  description: "buffers for inputs, parameters, reductions, state writes, outputs and every matmul (an epilogue may take a matmul's later)",
  run(s) {
    for (const n of s.order) {
      if (ALWAYS.has(n.op) || s.rootSet.has(n)) s.mat.add(n);
      else if (LEAF_CONST.has(n.op)) continue;
      else if (n.op === "matmul") s.mat.add(n);
    }
  },
};

/** An inline tree is rendered (and walked) recursively into one WGSL expression: a chain thousands of ops deep (a generated 4,000-term sum) gets a buffer every so often. */
export const limitInlineDepth: SchedulePass = {
  name: "inline-depth",
  description: `a buffer every ${MAX_INLINE_DEPTH} ops along an inline chain`,
  run(s) {
    const depth = new Map<Node, number>();
    for (const n of s.order) {
      if (s.mat.has(n) || LEAF_CONST.has(n.op)) continue;
      const d = 1 + Math.max(0, ...n.src.map((x) => depth.get(x) ?? 0));
      if (d > MAX_INLINE_DEPTH) s.mat.add(n);
      else depth.set(n, d);
    }
  },
};

export const materializeShared: SchedulePass = {
  name: "fan-out",
  description: `buffers for values that several users, a broadcast or a gather would recompute (more than ${RECOMPUTE_BUDGET} ops each)`,
  run(s) {
    const isMat = (n: Node) => s.mat.has(n);
    const cost = new Map<Node, number>();
    for (const n of s.order) {
      if (s.mat.has(n) || LEAF_CONST.has(n.op)) continue;
      const us = s.users.get(n) ?? [];
      const c = inlineCost(n, isMat, cost);
      // a value used k times, or broadcast over k elements each, is recomputed k times
      const fanout = us.length + us.filter((u) => u.op === "expand" && numel(s.shapes.get(u)!) > numel(s.shapes.get(n)!)).length;
      const gathered = us.some((u) => u.op === "gather" && u.src[0] === n);
      if ((fanout > 1 && c > RECOMPUTE_BUDGET) || (gathered && c > 0)) {
        // a reshape of a buffer is a free view: give the buffer to the computed value under
        // it (a softmax unsqueezed for a broadcast then stays a row kernel's output)
        let m = n;
        while (m.op === "reshape" && !s.mat.has(m.src[0]) && !LEAF_CONST.has(m.src[0].op) && !MOVEMENT.has(m.src[0].op) && s.users.get(m.src[0])!.length === 1)
          m = m.src[0];
        s.mat.add(m);
        cost.clear();
      }
    }
  },
};

/** The unfused baseline: one kernel per IR op. */
export const materializeEverything: SchedulePass = {
  name: "every-op",
  description: "a buffer for every computed node: one kernel per IR op, nothing inlined (the baseline the benchmarks compare with)",
  run(s) {
    for (const n of s.order) if (!LEAF_CONST.has(n.op)) s.mat.add(n);
  },
};
