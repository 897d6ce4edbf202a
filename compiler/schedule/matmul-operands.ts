import { inlineNodes } from "../inline-tree.ts";
import type { Node } from "../ir.ts";
import { isFree, LEAF_CONST, MOVEMENT } from "../op-classes.ts";
import type { SchedulePass, StridedView } from "../schedule.ts";
import { numel } from "../tensor.ts";
import type { ScheduleState } from "./state.ts";
import { softmaxScores } from "./softmax-pattern.ts";
import { stridedView } from "./views.ts";

/** The single matmul of an elementwise tree at its own shape, if that is what the tree is. */
function soleMatmul(root: Node, isMat: (n: Node) => boolean, shapes: ReadonlyMap<Node, readonly number[]>): Node | undefined {
  const found: Node[] = [];
  const seen = new Set<Node>();
  const visit = (n: Node): boolean => {
    if (seen.has(n) || isMat(n) || LEAF_CONST.has(n.op)) return true;
    seen.add(n);
    if (n.op === "matmul") {
      found.push(n);
      return true;
    }
    if (n.op === "sum" || n.op === "rmax" || n.op === "gather") return false;
    return n.src.every(visit);
  };
  if (!visit(root) || found.length !== 1) return undefined;
  return shapes.get(found[0])!.join() === shapes.get(root)!.join() ? found[0] : undefined;
}

/**
 * The inline region under `root` (stopping at `boundary`) if none of its computed
 * values other than `root` is an output or used outside it (index-only views of
 * buffers, such as a broadcast bias, may be shared freely).
 */
function closedRegion(s: ScheduleState, root: Node, boundary: (x: Node) => boolean): Set<Node> | undefined {
  const inside = new Set(inlineNodes(root, boundary));
  const computed = [...inside].filter((x) => x !== root && !isFree(x.op));
  return computed.some((x) => s.rootSet.has(x) || (s.users.get(x) ?? []).some((u) => !inside.has(u))) ? undefined : inside;
}

/**
 * Matmul operands must be strided views of buffers: the value under a head split or
 * transpose gets the buffer, so the operand is a zero-copy view; the operand itself is
 * copied only when no view exists. With `chains`, two matmuls with a row-wise step
 * between (attention, the FFN memory) become one kernel that never writes the scores.
 */
export function matmulOperands(chains: boolean): SchedulePass {
  return {
    name: "matmul-operands",
    description: chains ? "matmul operands as views of buffers; chained matmuls (attention, FFN memory) as one kernel" : "matmul operands as views of buffers",
    run(s) {
      const { mat, shapes, dims } = s;
      const isMat = (n: Node) => mat.has(n);
      const single = (n: Node) => (s.users.get(n)?.length ?? 0) === 1 && !s.rootSet.has(n);
      const asView = (x: Node): StridedView | undefined => {
        const direct = stridedView(x, isMat, shapes, dims);
        if (direct) return direct;
        let base = x;
        while (MOVEMENT.has(base.op) && base.op !== "pad" && base.op !== "concat") base = base.src[0];
        if (base === x || LEAF_CONST.has(base.op) || mat.has(base)) return undefined;
        // A concat or pad is a copy either way: copy only the operand when it is the smaller
        // (the router's class tokens sliced from all ViT layers, not the layers themselves).
        if ((base.op === "concat" || base.op === "pad") && numel(shapes.get(x)!) < numel(shapes.get(base)!)) return undefined;
        mat.add(base);
        const v = stridedView(x, isMat, shapes, dims);
        if (!v) mat.delete(base);
        return v;
      };
      for (const n of s.order) {
        if (n.op !== "matmul") continue;
        const [p, vNode] = n.src;
        const rank = shapes.get(p)!.length;
        // operands of a chain that are computed (rotary q, k) get their own buffer
        const viewOrCopy = (x: Node): StridedView | undefined => {
          const v = asView(x);
          if (v || LEAF_CONST.has(x.op)) return v;
          mat.add(x);
          return stridedView(x, isMat, shapes, dims);
        };
        const v = viewOrCopy(vNode);
        if (chains && v && single(p) && !isMat(p) && s.limits.fuseChains !== false) {
          const sm = softmaxScores(p, rank);
          const scores = sm ? sm.s : p;
          // Inside a chain, only real buffers bound the tree: values given a buffer for
          // fan-out within the chain (scores read by max and by exp) are inlined again.
          const hard = (x: Node) => (x.op === "input" || x.op === "param" || s.rootSet.has(x) || s.forced.has(x)) && !(sm?.parts.includes(x) ?? false);
          const first = soleMatmul(scores, hard, shapes);
          // A pointwise chain pays off for per-example keys (the FFN memory: Z + P_k);
          // with shared weights as keys (a plain MLP) two tuned matmuls are faster.
          const perExample = (x: Node) =>
            shapes
              .get(x)!
              .slice(0, rank - 2)
              .some((d) => d > 1);
          const q = first && viewOrCopy(first.src[0]);
          const k = first && viewOrCopy(first.src[1]);
          // the scores may be used several times, but only inside the chain (silu(s) = s·σ(s))
          const region = first && closedRegion(s, p, hard);
          if (first && q && k && region && shapes.get(first)!.length === rank && (sm || perExample(first.src[1]))) {
            for (const x of region) mat.delete(x);
            s.chains.set(n, { kind: sm ? "softmax" : "pointwise", first, q, k, scores, v });
            continue;
          }
        }
        for (const x of n.src) if (!asView(x)) mat.add(x);
      }
    },
  };
}
