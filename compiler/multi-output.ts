import { inlineNodes } from "./inline-tree.ts";
import type { Node } from "./ir.ts";
import { MOVEMENT } from "./op-classes.ts";
import type { Kernel } from "./schedule.ts";

/** How far back a kernel looks for an elementwise partner to share a pass with. */
const MERGE_WINDOW = 16;

/**
 * Multi-output elementwise groups: an elementwise kernel joins an earlier one of the same
 * shape when they read a common buffer or compute a common value (AdamW's new weight,
 * m and v from one gradient; rotary q and k from one table; FFN memory keys and values
 * from one Z). The pair runs where the earlier one ran when everything the later one
 * reads exists by then, else where the later one ran when nothing between reads the
 * earlier one's outputs. One pass then loads shared inputs and computes shared values
 * once, in one dispatch instead of several.
 */
export function mergeElementwise(
  kernels: readonly Kernel[],
  shapes: ReadonlyMap<Node, readonly number[]>,
  isMat: (n: Node) => boolean,
  maxBindings: number,
): Kernel[] {
  const out: (Kernel | undefined)[] = [];
  const producedAt = new Map<Node, number>();
  const computed = new Map<Kernel, Set<Node>>();
  const outputsOf = (k: Kernel) => [k.output, ...(k.also ?? [])];
  const computedBy = (k: Kernel) => {
    let c = computed.get(k);
    if (!c)
      computed.set(
        k,
        (c = new Set(
          outputsOf(k)
            .flatMap((o) => o.src.flatMap((x) => inlineNodes(x, isMat)))
            .filter((x) => !MOVEMENT.has(x.op)),
        )),
      );
    return c;
  };
  const place = (k: Kernel, at: number) => {
    out[at] = k;
    for (const o of outputsOf(k)) producedAt.set(o, at);
  };
  for (const k of kernels) {
    const shape = shapes.get(k.output)!.join();
    let joined: { at: number; moveDown: boolean } | undefined;
    for (let i = out.length - 1; k.kind === "elementwise" && !joined && i >= Math.max(0, out.length - MERGE_WINDOW); i--) {
      const p = out[i];
      if (!p || p.kind !== "elementwise" || shapes.get(p.output)!.join() !== shape) continue;
      if (new Set([...p.inputs, ...k.inputs]).size + outputsOf(p).length + 1 > maxBindings) continue;
      if (!(k.inputs.some((n) => p.inputs.includes(n)) || [...computedBy(k)].some((x) => computedBy(p).has(x)))) continue;
      if (k.inputs.every((n) => (producedAt.get(n) ?? -1) < i)) joined = { at: i, moveDown: false };
      else if (!out.slice(i + 1).some((q) => q?.inputs.some((n) => outputsOf(p).includes(n))) && !k.inputs.some((n) => outputsOf(p).includes(n)))
        joined = { at: i, moveDown: true };
    }
    if (!joined) {
      place(k, out.length);
      continue;
    }
    const p = out[joined.at]!;
    const both: Kernel = { ...p, inputs: [...new Set([...p.inputs, ...k.inputs])], also: [...(p.also ?? []), k.output], fused: p.fused + k.fused };
    computed.set(both, new Set([...computedBy(p), ...computedBy(k)]));
    if (joined.moveDown) out[joined.at] = undefined;
    place(both, joined.moveDown ? out.length : joined.at);
  }
  return out.filter((k): k is Kernel => k !== undefined);
}
