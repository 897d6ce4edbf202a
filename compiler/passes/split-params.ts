import { dimEq, shapeEq, shapeEval } from "../dims.ts";
import type { GraphBuilder } from "../graph.ts";
import type { Node } from "../ir.ts";
import type { Root } from "../pipeline.ts";
import { type Rule, rewriteGraph, rule } from "../rewrite.ts";
import { ELEMENTWISE } from "../op-classes.ts";
import { numel } from "../tensor.ts";
import { TensorOps } from "../tensor-ops.ts";

/**
 * Frozen weights larger than one storage binding (LLaMA-7B's 500 MiB embedding and
 * vocabulary projection, where lavapipe binds 128 MiB) become several parameters, row
 * blocks of the original, each in a buffer of its own, and the original a concat of them
 * (nested, a few blocks per concat):
 *   - a gather from it reads the block its row lies in (the concat, rendered inline);
 *   - a matmul reading it as B (x·Wᵀ, W [out, in]) becomes one matmul per block, the
 *     outputs concatenated along N; split along K instead, a sum of per-block matmuls.
 * The plan uploads each block from the original's values (PlanTensor.part). Trainable
 * parameters are never split: their gradients and optimizer state would have to be too.
 */

/** A block of rows [start, end) of parameter `of`. */
export interface ParamPart {
  readonly of: string;
  readonly start: number;
  readonly end: number;
}

/** Whether a parameter may be split into blocks (see splitLargeParams). */
export const splittable = (p: { readonly trainable: boolean }): boolean => !p.trainable;

export interface SplitOptions {
  /** the most bytes one binding holds */
  readonly maxBytes: number;
  /** run-time dims, to size intermediates (see slice-through-elementwise) */
  readonly dims?: Readonly<Record<string, number>>;
  /** bytes an element of this parameter takes on the device */
  readonly elementBytes: (p: Node<"param">) => number;
}

/** The parts of each split parameter, by part name, and the rewritten roots. */
export interface SplitResult {
  readonly roots: readonly Root[];
  readonly parts: ReadonlyMap<string, ParamPart>;
}

/**
 * The B operand of a matmul as a view of a split parameter's concat: the blocks, the axis
 * of B they are stacked along, and how to view one block the way B views the whole.
 * Views are permutes and reshapes that add or drop unit axes (how `x @ w^T` reads w).
 */
interface BlockView {
  readonly blocks: readonly Node[];
  readonly axis: number;
  view(block: Node, g: GraphBuilder): Node;
}

function blockView(b: Node, concats: ReadonlySet<Node>): BlockView | undefined {
  if (concats.has(b)) return { blocks: b.src, axis: (b as Node<"concat">).attrs.axis, view: (x) => x };
  if (b.op === "permute") {
    const inner = blockView(b.src[0], concats);
    const perm = (b as Node<"permute">).attrs.perm;
    return inner && { blocks: inner.blocks, axis: perm.indexOf(inner.axis), view: (x, g) => g.make("permute", [inner.view(x, g)], { perm }) };
  }
  if (b.op === "reshape") {
    const inner = blockView(b.src[0], concats);
    const from = b.src[0].shape;
    const to = (b as Node<"reshape">).attrs.shape;
    const units = (s: typeof to) => s.filter((d) => d !== 1);
    if (!inner || !shapeEq(units(from), units(to))) return undefined;
    // the stacked axis is the k-th axis of size > 1 on both sides
    const k = from.slice(0, inner.axis).filter((d) => d !== 1).length;
    const axis = to.findIndex((d, i) => d !== 1 && to.slice(0, i).filter((e) => e !== 1).length === k);
    return { blocks: inner.blocks, axis, view: (x, g) => g.make("reshape", [inner.view(x, g)], { shape: to.map((d, i) => (i === axis ? x.shape[0] : d)) }) };
  }
  return undefined;
}

export function splitLargeParams(roots: readonly Root[], g: GraphBuilder, opts: SplitOptions): SplitResult {
  const parts = new Map<string, ParamPart>();
  const concats = new Set<Node>();
  const rules: Rule[] = [
    rule("split-large-param", ["param"], (p) => {
      const shape = p.shape;
      const bytes = numel(shape as number[]) * opts.elementBytes(p);
      if (p.attrs.trainable || bytes <= opts.maxBytes || shape.length === 0 || shape.some((d) => typeof d !== "number")) return undefined;
      const rows = shape[0] as number;
      const perRow = bytes / rows;
      const blockRows = Math.floor(opts.maxBytes / perRow);
      if (blockRows < 1) return undefined; // one row is already too large: the size check says so
      const blocks: Node[] = [];
      for (let start = 0; start < rows; start += blockRows) {
        const end = Math.min(rows, start + blockRows);
        const name = `${p.attrs.name}[${start}:${end}]`;
        parts.set(name, { of: p.attrs.name, start, end });
        blocks.push(g.make("param", [], { ...p.attrs, name, shape: [end - start, ...shape.slice(1)] }));
      }
      // nested CONCAT_FANIN at a time (TensorOps.concat), so no kernel binds more blocks than a device allows
      const whole = new TensorOps(g).concat(blocks, 0);
      const mark = (n: Node): void => {
        if (n.op !== "concat") return;
        concats.add(n);
        n.src.forEach(mark);
      };
      mark(whole);
      return whole;
    }),
    rule("matmul-per-block", ["matmul"], (mm) => {
      const [a, b] = mm.src;
      const v = blockView(b, concats);
      const rank = b.shape.length;
      if (!v) return undefined;
      const out = mm.shape.length;
      if (v.axis === rank - 1)
        return g.make(
          "concat",
          v.blocks.map((x) => g.make("matmul", [a, v.view(x, g)], {})),
          { axis: out - 1 },
        );
      if (v.axis !== rank - 2) return undefined;
      // split along K: A's matching column ranges, summed
      const k = a.shape.length - 1;
      let at = 0;
      const terms = v.blocks.map((x) => {
        const n = x.shape[0] as number;
        const cols = g.make("slice", [a], { start: a.shape.map((_, i) => (i === k ? at : 0)), end: a.shape.map((d, i) => (i === k ? at + n : d)) });
        at += n;
        return g.make("matmul", [cols, v.view(x, g)], {});
      });
      return terms.slice(1).reduce<Node>((s, t) => g.make("add", [s, t], {}), terms[0]);
    }),
  ];
  // An intermediate past the limit that is only read in blocks (the gradient of split
  // logits, read by the per-block matmuls of the backward) is computed block by block:
  // a slice moves through elementwise ops and broadcasts to the blocks it came from.
  const oversized = (n: Node) => {
    const shape = shapeEval(n.shape, opts.dims ?? {});
    return numel(shape) * 4 > opts.maxBytes;
  };
  rules.push(
    rule("slice-through-elementwise", ["slice"], (sl) => {
      const x = sl.src[0];
      if (!oversized(x)) return undefined;
      const { start, end } = sl.attrs;
      if (ELEMENTWISE.has(x.op) && x.src.every((s) => shapeEq(s.shape, x.shape)))
        return g.make(
          x.op,
          x.src.map((s) => g.make("slice", [s], { start, end })),
          x.attrs,
        );
      if (x.op === "expand" && x.src[0].shape.length === x.shape.length) {
        const inner = x.src[0];
        // axes the source broadcasts keep size 1; the others are sliced
        const cut = g.make("slice", [inner], {
          start: inner.shape.map((d, i) => (d === 1 ? 0 : start[i])),
          end: inner.shape.map((d, i) => (d === 1 ? 1 : end[i])),
        });
        return g.make("expand", [cut], { shape: sl.shape });
      }
      if (x.op === "concat") {
        const axis = (x as Node<"concat">).attrs.axis;
        if (typeof start[axis] !== "number" || typeof end[axis] !== "number" || x.src.some((part) => typeof part.shape[axis] !== "number")) return undefined;
        if (x.shape.some((d, i) => i !== axis && !(dimEq(start[i], 0) && dimEq(end[i], d)))) return undefined;
        let at = 0;
        const within = x.src.filter((part) => {
          const [lo, hi] = [at, (at += part.shape[axis] as number)];
          return lo >= (start[axis] as number) && hi <= (end[axis] as number);
        });
        const covered = within.reduce((a, part) => a + (part.shape[axis] as number), 0);
        return covered === (end[axis] as number) - (start[axis] as number) ? (within.length === 1 ? within[0] : g.make("concat", within, { axis })) : undefined;
      }
      return undefined;
    }),
  );
  const nodes = rewriteGraph(
    roots.map((r) => r.node),
    g,
    rules,
  );
  return { roots: roots.map((r, i) => ({ name: r.name, node: nodes[i] })), parts };
}
