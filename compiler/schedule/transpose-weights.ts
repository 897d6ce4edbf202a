import type { Node } from "../ir.ts";
import { epilogueInputs, type Kernel, type SchedulePass } from "../schedule.ts";
import { stridedView } from "./views.ts";

/**
 * `x @ wᵀ` with w stored [out, in] reads B with stride K along its columns, which
 * defeats vector loads (measured 19-24 vs 34-37 GFLOP/s on lavapipe). A 2-D parameter
 * that is read only as the B operand of plain matmul kernels is stored transposed
 * instead (the executor transposes it once at upload) when that makes B unit-stride.
 */
function transposedWeights(
  kernels: Kernel[],
  shapes: ReadonlyMap<Node, readonly number[]>,
  dims: Readonly<Record<string, number>>,
  isMat: (n: Node) => boolean,
): Set<Node> {
  const candidates = new Set<Node>();
  const banned = new Set<Node>();
  for (const k of kernels) {
    for (const n of k.inputs) {
      if (n.op !== "param" || shapes.get(n)!.length !== 2) continue;
      const onlyAsB = k.kind === "matmul" && n === k.matmul.b.base && k.matmul.a.base !== n && !epilogueInputs(k).includes(n);
      if (onlyAsB && k.matmul.b.strides.at(-1) !== 1 && k.matmul.b.strides.at(-2) === 1) candidates.add(n);
      else banned.add(n);
    }
  }
  const chosen = new Set([...candidates].filter((n) => !banned.has(n)));
  kernels.forEach((k, i) => {
    if (k.kind !== "matmul" || !chosen.has(k.matmul.b.base)) return;
    const b = stridedView(k.matmul.node.src[1], isMat, shapes, dims, chosen)!;
    kernels[i] = { ...k, matmul: { ...k.matmul, b } };
  });
  return chosen;
}

export const transposeWeights: SchedulePass = {
  name: "transpose-weights",
  description: "2-D weights read only as a matmul's B through a transpose are stored transposed (unit-stride loads)",
  run(s) {
    s.transposedParams = transposedWeights(s.kernels, s.shapes, s.dims, (x) => s.mat.has(x));
  },
};
