import { findRowGroup } from "../row-group.ts";
import type { SchedulePass } from "../schedule.ts";

/**
 * Row groups: an elementwise output and the last-axis reductions it needs (softmax,
 * LayerNorm, RMSNorm and their backward) become one kernel. Latest first, so a group also
 * takes in earlier values it alone uses (LayerNorm's centred x, materialized for its two
 * readers) instead of leaving them a kernel.
 */
export const rowGroups: SchedulePass = {
  name: "row-groups",
  description: "softmax, norms and their backward: a value and the per-row reductions it needs as one kernel",
  run(s) {
    const isMat = (x: Parameters<typeof s.mat.has>[0]) => s.mat.has(x);
    for (const n of [...s.order].reverse()) {
      if (!s.mat.has(n)) continue;
      const g = findRowGroup(n, {
        shapes: s.shapes,
        users: s.users,
        isMat,
        pinned: (x) => s.rootSet.has(x) || s.forced.has(x) || s.rowGroups.has(x) || x.op === "input" || x.op === "param",
        position: (x) => s.position.get(x)!,
      });
      if (!g) continue;
      for (const x of g.absorbed) s.mat.delete(x);
      s.rowGroups.set(n, g);
    }
  },
};
