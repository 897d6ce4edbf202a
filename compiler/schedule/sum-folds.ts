import type { SchedulePass, StridedView } from "../schedule.ts";
import { stridedView } from "./views.ts";

/**
 * Whether Σ over batch axis `axis` of A·B is one matmul with K' = n·K: both operands
 * step along that axis by exactly K of their k strides (A's last axis, B's second to
 * last), so k' = i·K + k addresses the same elements.
 */
export function foldableSum(axis: number, aShape: readonly number[], bShape: readonly number[], a: StridedView, b: StridedView): boolean {
  const rank = aShape.length;
  const K = aShape[rank - 1];
  const ak = a.strides[rank - 1];
  const bk = b.strides[rank - 2];
  // a broadcast operand (size 1 on the axis) is a different sum: A·Σ_b B_b
  const both = bShape.length === rank && aShape[axis] > 1 && aShape[axis] === bShape[axis];
  return axis < rank - 2 && both && ak > 0 && bk > 0 && a.strides[axis] === K * ak && b.strides[axis] === K * bk;
}

/**
 * A batched matmul summed over a batch axis (a weight's gradient: Σ_b x_bᵀ·g_b) is one
 * matmul over the concatenated K when both operands continue contiguously along k across
 * that axis: no [batch, …] product in memory, no reduce kernel, and a long K instead of
 * many short ones.
 */
export const sumFolds: SchedulePass = {
  name: "sum-folds",
  description: "a batched matmul summed over a batch axis (a weight's gradient) as one matmul over the longer K",
  run(s) {
    const isMat = (x: Parameters<typeof s.mat.has>[0]) => s.mat.has(x);
    for (const n of s.order) {
      if (n.op !== "sum" || !s.mat.has(n)) continue;
      const mm = n.src[0];
      const axis = (n.attrs as { axis: number }).axis;
      if (mm.op !== "matmul" || !s.mat.has(mm) || s.rootSet.has(mm) || s.forced.has(mm) || s.chains.has(mm) || s.users.get(mm)!.length !== 1) continue;
      const a = stridedView(mm.src[0], isMat, s.shapes, s.dims);
      const b = stridedView(mm.src[1], isMat, s.shapes, s.dims);
      if (!a || !b || !foldableSum(axis, s.shapes.get(mm.src[0])!, s.shapes.get(mm.src[1])!, a, b)) continue;
      s.mat.delete(mm);
      s.sumFolds.set(n, axis);
    }
  },
};
