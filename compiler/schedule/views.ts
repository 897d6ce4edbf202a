import { shapeEval } from "../dims.ts";
import type { Node } from "../ir.ts";
import type { StridedView } from "../schedule.ts";
import { stridesOf } from "../tensor.ts";

/**
 * A chain of reshape/permute/expand/slice over a materialized node, as offset+strides,
 * or undefined when the chain needs a copy. Matmul operands must be views so the
 * matmul kernel can read them directly (a transposed weight costs nothing).
 */
export function stridedView(
  n: Node,
  isMat: (n: Node) => boolean,
  shapes: ReadonlyMap<Node, readonly number[]>,
  dims: Readonly<Record<string, number>> = {},
  transposed: ReadonlySet<Node> = new Set(),
): StridedView | undefined {
  if (isMat(n)) {
    const shape = shapes.get(n)!;
    // a parameter stored transposed on the device: element (i, j) lives at j*rows + i
    return { base: n, offset: 0, strides: transposed.has(n) ? [1, shape[0]] : stridesOf(shape) };
  }
  const src = n.src[0];
  const inner = () => stridedView(src, isMat, shapes, dims, transposed);
  switch (n.op) {
    case "permute": {
      const v = inner();
      const perm = (n.attrs as { perm: readonly number[] }).perm;
      return v && { ...v, strides: perm.map((p) => v.strides[p]) };
    }
    case "expand": {
      const v = inner();
      const from = shapes.get(src)!;
      const to = shapes.get(n)!;
      return v && { ...v, strides: v.strides.map((s, i) => (from[i] === 1 && to[i] !== 1 ? 0 : s)) };
    }
    case "slice": {
      const v = inner();
      if (!v) return undefined;
      const start = shapeEval((n.attrs as { start: Node["shape"] }).start, dims);
      return { ...v, offset: v.offset + start.reduce((acc, s, i) => acc + s * v.strides[i], 0) };
    }
    case "reshape": {
      const v = inner();
      if (!v) return undefined;
      return reshapeView(v, shapes.get(src)!, shapes.get(n)!);
    }
    default:
      return undefined;
  }
}

/** numpy's no-copy reshape: merge runs of input dims that are mutually contiguous, then split them. */
function reshapeView(v: StridedView, from: readonly number[], to: readonly number[]): StridedView | undefined {
  const f = from.map((d, i) => [d, v.strides[i]] as const).filter(([d]) => d !== 1);
  const out: number[] = [];
  let fi = 0;
  for (let ti = 0; ti < to.length; ) {
    if (to[ti] === 1) {
      out.push(0);
      ti++;
      continue;
    }
    // collect input dims until their product equals the product of collected output dims
    let pin = 1;
    let pout = 1;
    const group: (readonly [number, number])[] = [];
    const outDims: number[] = [];
    do {
      if (pin <= pout || outDims.length === 0) {
        if (fi >= f.length) return undefined;
        group.push(f[fi]);
        pin *= f[fi++][0];
      }
      while (pout < pin && ti < to.length) {
        outDims.push(to[ti]);
        pout *= to[ti++];
      }
    } while (pin !== pout);
    for (let k = 0; k + 1 < group.length; k++) if (group[k][1] !== group[k + 1][1] * group[k + 1][0]) return undefined;
    let stride = group[group.length - 1][1];
    const st: number[] = [];
    for (let k = outDims.length - 1; k >= 0; k--) {
      st.unshift(outDims[k] === 1 ? 0 : stride);
      stride *= outDims[k];
    }
    out.push(...st);
  }
  if (fi !== f.length) return undefined;
  return { ...v, strides: out };
}
