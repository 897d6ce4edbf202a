import { severalExits } from "../epilogue-exits.ts";
import { hasMatmulBelow } from "../inline-tree.ts";
import type { Node } from "../ir.ts";
import { ELEMENTWISE } from "../op-classes.ts";
import type { SchedulePass } from "../schedule.ts";

/**
 * Absorb a matmul into an epilogue: the elementwise region above it at its own shape
 * (bias, activation, residual, scale) whose values are used only inside the region, up to
 * one exit node. GELU reads its input twice and still qualifies. The exit gets the buffer
 * instead of the matmul, so no kernel is added; where no single exit closes the region,
 * up to three exits share the kernel (epilogue-exits.ts).
 */
export const matmulEpilogues: SchedulePass = {
  name: "epilogues",
  description: "each matmul with the elementwise ops above it at its shape (bias, activation, residual) as one kernel, with one or several exits",
  run(s) {
    const { mat, users, position, rootSet } = s;
    const chainFirsts = new Set([...s.chains.values()].map((c) => c.first));
    const sameShape = (x: Node, n: Node) => s.shapes.get(x)!.join() === s.shapes.get(n)!.join();
    const exitContext = { order: s.order, users, position, mat, isRoot: (x: Node) => rootSet.has(x) };
    for (const n of s.order) {
      if (n.op !== "matmul" || rootSet.has(n) || chainFirsts.has(n)) continue;
      // candidates: elementwise nodes reachable upward through same-shape elementwise users
      const region = new Set<Node>([n]);
      const queue = [n];
      while (queue.length && region.size < 32) {
        const x = queue.shift()!;
        if (x !== n && mat.has(x)) continue;
        // a buffer (an output, say) may be the exit, never an interior node: see `closed`
        for (const u of users.get(x) ?? [])
          if (!region.has(u) && ELEMENTWISE.has(u.op) && sameShape(u, n) && !s.absorbedInto.has(u)) {
            region.add(u);
            queue.push(u);
          }
      }
      // the exit: the latest candidate whose ancestors within the region keep all their users inside
      let end = n;
      // in graph order: the region's members, not the whole graph once per matmul
      for (const e of [...region].sort((x, y) => position.get(x)! - position.get(y)!)) {
        if (e === n) continue;
        const inside = new Set<Node>([e]);
        const collect = (x: Node): void => {
          for (const src of x.src)
            if (region.has(src) && !inside.has(src)) {
              inside.add(src);
              collect(src);
            }
        };
        collect(e);
        if (!inside.has(n)) continue;
        const closed = [...inside].every((x) => x === e || (!(x !== n && mat.has(x)) && (users.get(x) ?? []).every((u) => inside.has(u))));
        if (closed) end = e;
      }
      // several exits also when the single one only feeds more of the region (Z feeding Z + P_k and Z + P_v)
      const endFeedsRegion = end !== n && !rootSet.has(end) && (users.get(end) ?? []).every((u) => region.has(u));
      const exits = end === n || endFeedsRegion ? severalExits(n, region, exitContext) : undefined;
      if (exits) {
        mat.delete(n);
        for (const e of exits) {
          mat.add(e);
          s.absorbedInto.add(e);
        }
        s.extraExits.set(exits[0], exits.slice(1));
        for (const e of exits.slice(1)) s.secondaryExits.add(e);
        continue;
      }
      if (end === n || hasMatmulBelow(end, n, mat)) continue;
      mat.delete(n);
      mat.add(end);
      s.absorbedInto.add(end);
    }
  },
};
