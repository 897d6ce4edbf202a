import type { Node } from "./ir.ts";
import { ELEMENTWISE, LEAF_CONST } from "./op-classes.ts";

/**
 * A row group: an elementwise output [..., N] together with the reductions over its last
 * axis that it depends on (softmax's max and sum, LayerNorm's mean and variance,
 * RMSNorm's mean square), computed by one kernel that walks each row once per reduction
 * and once more to write. Without it each reduction is a kernel and a buffer of its own,
 * and the elementwise work between them is recomputed by each.
 */
export interface RowGroup {
  /** the axis the rows run along (the last one for softmax and norms; any axis works) */
  readonly axis: number;
  /** the reductions, in dependency order; inside the kernel each is one scalar per row */
  readonly reductions: readonly Node[];
  /** materialized nodes the group computes itself (the reductions and values between them) */
  readonly absorbed: readonly Node[];
}

export interface RowGroupContext {
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  readonly users: ReadonlyMap<Node, readonly Node[]>;
  /** nodes with a buffer of their own */
  isMat(n: Node): boolean;
  /** nodes that must keep their buffer (outputs, forced splits) */
  pinned(n: Node): boolean;
  /** the position of a node in topological order */
  position(n: Node): number;
}

/** The most buffered values one row kernel takes in (norms and softmax take in a handful). */
const MAX_ABSORBED = 64;

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Whether the inline tree under `n` (stopping at buffers) holds a matmul: an epilogue or chain exit. */
function computesMatmul(n: Node, isMat: (n: Node) => boolean): boolean {
  // a loop, not recursion: an inline tree can be a chain thousands of nodes deep
  const seen = new Set<Node>([n]);
  const stack = [n];
  while (stack.length) {
    const x = stack.pop()!;
    if (x.op === "matmul") return true;
    for (const s of x.src) {
      if (seen.has(s) || isMat(s) || LEAF_CONST.has(s.op)) continue;
      seen.add(s);
      stack.push(s);
    }
  }
  return false;
}

/**
 * Where the kernel evaluates a node: at the row's element j ("full", the output's shape),
 * at the row itself ("row", shape [..., 1], broadcast along the row), or somewhere else
 * reached through index math ("other"). A reduction becomes one scalar per row, so it
 * may only be reached as "row"; an absorbed elementwise value is recomputed wherever
 * it is reached, so it only needs a consistent shape.
 */
type Place = "full" | "row" | "other";

/**
 * The row group ending at `out`, or undefined when `out` has no last-axis reduction it
 * could absorb. Absorbed nodes must be used only inside the group (the region is closed),
 * so no other kernel ever has to compute a reduction inline.
 */
export function findRowGroup(out: Node, ctx: RowGroupContext): RowGroup | undefined {
  const rank = ctx.shapes.get(out)!.length;
  if (rank === 0 || !ELEMENTWISE.has(out.op) || computesMatmul(out, ctx.isMat)) return undefined;
  // the last axis first: softmax and norms, with contiguous rows
  for (let axis = rank - 1; axis >= 0; axis--) {
    const g = rowGroupAlong(out, axis, ctx);
    if (g) return g;
  }
  return undefined;
}

function rowGroupAlong(out: Node, axis: number, ctx: RowGroupContext): RowGroup | undefined {
  const shape = ctx.shapes.get(out)!;
  const rowShape = shape.map((d, i) => (i === axis ? 1 : d));
  const isRowReduction = (x: Node) =>
    (x.op === "sum" || x.op === "rmax") &&
    (x.attrs as { axis: number }).axis === axis &&
    sameShape(ctx.shapes.get(x.src[0])!, shape) &&
    sameShape(ctx.shapes.get(x)!, rowShape);
  const absorbable = (x: Node) =>
    ctx.isMat(x) &&
    !ctx.pinned(x) &&
    (isRowReduction(x) ||
      (ELEMENTWISE.has(x.op) && (sameShape(ctx.shapes.get(x)!, shape) || sameShape(ctx.shapes.get(x)!, rowShape)) && !computesMatmul(x, ctx.isMat)));
  const excluded = new Set<Node>();
  for (;;) {
    const region = new Set<Node>([out]);
    const absorbed = new Set<Node>();
    const misplaced = new Set<Node>();
    const visited = new Set<string>();
    // a loop over a stack, not recursion: a region can sit on a chain thousands of ops deep
    const stack: [Node, Place][] = [[out, "full"]];
    while (stack.length) {
      const [x, place] = stack.pop()!;
      const key = `${x.id}|${place}`;
      if (visited.has(key)) continue;
      visited.add(key);
      for (const s of x.src) {
        if (LEAF_CONST.has(s.op)) continue;
        const mat = ctx.isMat(s);
        // a buffer the kernel reads; past MAX_ABSORBED the kernel stops taking in more (its WGSL is one expression tree)
        if (mat && (!absorbable(s) || excluded.has(s) || (!absorbed.has(s) && absorbed.size >= MAX_ABSORBED))) continue;
        const sPlace: Place = isRowReduction(x)
          ? "full"
          : x.op === "expand" && place === "full" && sameShape(ctx.shapes.get(s)!, rowShape)
            ? "row"
            : ELEMENTWISE.has(x.op)
              ? place
              : "other";
        if (mat && (sPlace === "other" || (isRowReduction(s) && sPlace !== "row"))) misplaced.add(s);
        region.add(s);
        if (mat) absorbed.add(s);
        stack.push([s, sPlace]);
      }
    }
    // Values used outside the region (or outputs) would make another kernel compute an
    // absorbed node inline: give back every absorbed node they depend on.
    const giveBack = new Set<Node>(misplaced);
    for (const x of region) {
      if (x === out || !(ctx.pinned(x) || (ctx.users.get(x) ?? []).some((u) => !region.has(u)))) continue;
      for (const a of absorbedUnder(x, region, absorbed)) giveBack.add(a);
    }
    if (giveBack.size === 0) {
      const reductions = [...absorbed].filter(isRowReduction).sort((a, b) => ctx.position(a) - ctx.position(b));
      return reductions.length ? { axis, reductions, absorbed: [...absorbed] } : undefined;
    }
    for (const a of giveBack) excluded.add(a);
  }
}

/** Absorbed nodes reachable from `x` within the region (x included). */
function absorbedUnder(x: Node, region: ReadonlySet<Node>, absorbed: ReadonlySet<Node>): Node[] {
  const found: Node[] = [];
  const seen = new Set<Node>([x]);
  const stack = [x];
  while (stack.length) {
    const n = stack.pop()!;
    if (absorbed.has(n)) found.push(n);
    for (const s of n.src) if (!seen.has(s) && region.has(s)) stack.push(s), seen.add(s);
  }
  return found;
}
