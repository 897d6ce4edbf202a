import { shapeEval } from "./dims.ts";
import { executionOrder } from "./recompute.ts";
import type { Node, Op } from "./ir.ts";
import { ELEMENTWISE, LEAF_CONST, MOVEMENT } from "./op-classes.ts";
import { type ExitContext, severalExits } from "./epilogue-exits.ts";
import { hasMatmulBelow, inlineNodes } from "./inline-tree.ts";
import { mergeElementwise } from "./multi-output.ts";
import type { Root } from "./pipeline.ts";
import { findRowGroup, type RowGroup } from "./row-group.ts";
import { numel, stridesOf } from "./tensor.ts";

/**
 * The scheduler decides which IR nodes get a buffer ("materialized") and groups
 * everything else into the kernels that compute those buffers. Movement ops never get
 * a buffer of their own: they become index math inside their consumers (zero-copy
 * transposes, broadcasts, slices). Elementwise chains fold into the kernel that needs
 * them; a matmul folds into its consumer's kernel as the accumulator of an epilogue.
 */

export type KernelKind = "elementwise" | "reduce" | "matmul" | "attention" | "row" | "write-slot";

/**
 * Two chained matmuls with a row-wise step between, computed in one kernel without
 * materializing the scores: attention (`softmax(S(Q Kᵀ)) V`, online softmax) and the
 * FFN memory branch (`act(x Kᵀ) V`, pointwise).
 */
export interface ChainedMatmul {
  readonly kind: "softmax" | "pointwise";
  /** the first matmul (scores); inside the kernel its value is `dot` */
  readonly first: Node;
  readonly q: StridedView;
  readonly k: StridedView;
  /** softmax: the masked/scaled scores S; pointwise: the probabilities P */
  readonly scores: Node;
  readonly v: StridedView;
}

export interface StridedView {
  readonly base: Node;
  readonly offset: number;
  readonly strides: readonly number[];
}

export interface Kernel {
  readonly kind: KernelKind;
  /** the materialized node this kernel writes */
  readonly output: Node;
  /** materialized nodes it reads (its bindings, besides the output) */
  readonly inputs: readonly Node[];
  /**
   * for matmul kernels: the matmul node (its result is `acc` inside the epilogue) and
   * operand views; `sumAxis`: the output is `sum(matmul, sumAxis)` over a batch axis,
   * computed as one matmul with that axis folded into K (see foldableSum)
   */
  readonly matmul?: { readonly node: Node; readonly a: StridedView; readonly b: StridedView; readonly sumAxis?: number };
  readonly chain?: ChainedMatmul;
  /** row kernels: the reductions along `axis` (scalars per row, in dependency order); `softmax` names the common case */
  readonly row?: { readonly axis: number; readonly reductions: readonly Node[]; readonly softmax: boolean };
  /**
   * more outputs of `output`'s shape computed in the same pass: elementwise kernels bind
   * them after their inputs, matmul epilogues after their epilogue inputs
   */
  readonly also?: readonly Node[];
  /** number of IR nodes this kernel computes (itself plus what it inlines) */
  readonly fused: number;
}

export interface Schedule {
  readonly kernels: readonly Kernel[];
  readonly materialized: ReadonlySet<Node>;
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  /** the run-time dims this schedule is specialised to */
  readonly dims: Readonly<Record<string, number>>;
  /** 2-D parameters stored transposed on the device (read only as `wᵀ` matmul operands) */
  readonly transposedParams: ReadonlySet<Node>;
  /** IR nodes reachable from the roots */
  readonly irNodes: number;
}

export interface ScheduleLimits {
  /** storage buffers one kernel may bind (output included) */
  readonly maxBindings: number;
  /** false: one kernel per IR op, nothing inlined (the baseline the benchmarks compare with) */
  readonly fuse?: boolean;
  /** fuse chained matmuls (attention, FFN memory) into one kernel */
  readonly fuseChains?: boolean;
}

const ALWAYS = new Set<Op>(["input", "param", "sum", "rmax", "write_slot"]);

export function concreteShapes(order: readonly Node[], dims: Readonly<Record<string, number>>): Map<Node, number[]> {
  return new Map(order.map((n) => [n, shapeEval(n.shape, dims)]));
}

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

const unwrap = (n: Node): Node => (n.op === "expand" || n.op === "reshape" ? unwrap(n.src[0]) : n);

/** `mul(E, expand(recip(sum(E, last))))`, `E = exp(S + expand(neg(rmax(S, last))))`: S, or undefined. */
function softmaxScores(p: Node, rank: number): { s: Node; e: Node; parts: Node[] } | undefined {
  if (p.op !== "mul") return undefined;
  for (const [e, x] of [[p.src[0], p.src[1]], [p.src[1], p.src[0]]]) {
    if (e.op !== "exp") continue;
    const recip = unwrap(x);
    const sum = recip.op === "recip" ? unwrap(recip.src[0]) : undefined;
    if (!sum || sum.op !== "sum" || sum.src[0] !== e || (sum.attrs as { axis: number }).axis !== rank - 1) continue;
    const add = e.src[0];
    if (add.op !== "add") continue;
    for (const [sNode, y] of [[add.src[0], add.src[1]], [add.src[1], add.src[0]]]) {
      let m = unwrap(y);
      if (m.op !== "neg") continue;
      m = unwrap(m.src[0]);
      if (m.op === "rmax" && m.src[0] === sNode && (m.attrs as { axis: number }).axis === rank - 1) return { s: sNode, e, parts: [p, e, add, sum, recip, m] };
    }
  }
  return undefined;
}

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

/** Arithmetic ops per element to recompute `n` inline (index math counts as free). */
function inlineCost(n: Node, isMat: (n: Node) => boolean, memo: Map<Node, number>): number {
  if (isMat(n) || LEAF_CONST.has(n.op)) return 0;
  const hit = memo.get(n);
  if (hit !== undefined) return hit;
  // an element of a concat comes from one part only
  const parts = n.src.map((s) => inlineCost(s, isMat, memo));
  let c = n.op === "concat" ? Math.max(0, ...parts) : parts.reduce((a, b) => a + b, 0);
  if (!MOVEMENT.has(n.op) && n.op !== "cast" && n.op !== "barrier") c += 1;
  memo.set(n, c);
  return c;
}

/** The deepest inline tree a kernel computes; far above any real model's (a few dozen), far below the stack's. */
const MAX_INLINE_DEPTH = 128;

/** Recomputing up to this many ops per element is cheaper than a kernel and a round trip through memory. */
const RECOMPUTE_BUDGET = 4;

/** `forced`: nodes that must get a buffer (grown when a kernel would exceed the binding limit). */
export function schedule(roots: readonly Root[], dims: Readonly<Record<string, number>>, limits: ScheduleLimits, forced: ReadonlySet<Node> = new Set()): Schedule {
  const order = executionOrder(roots.map((r) => r.node));
  const shapes = concreteShapes(order, dims);
  const users = new Map<Node, Node[]>();
  for (const n of order)
    for (const s of n.src) {
      const us = users.get(s);
      if (us) us.push(n);
      else users.set(s, [n]);
    }
  const rootSet = new Set(roots.map((r) => r.node));
  const mat = new Set<Node>(forced);
  const isMat = (n: Node) => mat.has(n);

  // 1. Materialize sources, reductions, outputs, shared non-trivial values and
  //    values that a broadcast or gather would otherwise recompute many times.
  for (const n of order) {
    if (ALWAYS.has(n.op) || rootSet.has(n)) mat.add(n);
    else if (LEAF_CONST.has(n.op)) continue;
    else if (n.op === "matmul") mat.add(n); // may be absorbed below
  }
  // An inline tree is rendered (and walked) recursively into one WGSL expression: a chain
  // thousands of ops deep (a generated 4,000-term sum) gets a buffer every so often.
  const depth = new Map<Node, number>();
  for (const n of order) {
    if (mat.has(n) || LEAF_CONST.has(n.op)) continue;
    const d = 1 + Math.max(0, ...n.src.map((s) => depth.get(s) ?? 0));
    if (d > MAX_INLINE_DEPTH) mat.add(n);
    else depth.set(n, d);
  }
  const cost = new Map<Node, number>();
  for (const n of order) {
    if (mat.has(n) || LEAF_CONST.has(n.op)) continue;
    const us = users.get(n) ?? [];
    const c = inlineCost(n, isMat, cost);
    // a value used k times, or broadcast over k elements each, is recomputed k times
    const fanout = us.length + us.filter((u) => u.op === "expand" && numel(shapes.get(u)!) > numel(shapes.get(n)!)).length;
    const gathered = us.some((u) => u.op === "gather" && u.src[0] === n);
    if ((fanout > 1 && c > RECOMPUTE_BUDGET) || (gathered && c > 0)) {
      // a reshape of a buffer is a free view: give the buffer to the computed value under
      // it (a softmax unsqueezed for a broadcast then stays a row kernel's output)
      let m = n;
      while (m.op === "reshape" && !mat.has(m.src[0]) && !LEAF_CONST.has(m.src[0].op) && !MOVEMENT.has(m.src[0].op) && users.get(m.src[0])!.length === 1) m = m.src[0];
      mat.add(m);
      cost.clear();
    }
  }
  if (limits.fuse === false) for (const n of order) if (!LEAF_CONST.has(n.op)) mat.add(n);
  /**
   * The inline region under `root` (stopping at `boundary`) if none of its computed
   * values other than `root` is an output or used outside it (index-only views of
   * buffers, such as a broadcast bias, may be shared freely).
   */
  const closedRegion = (root: Node, boundary: (x: Node) => boolean): Set<Node> | undefined => {
    const inside = new Set(inlineNodes(root, boundary));
    const computed = [...inside].filter((x) => x !== root && !MOVEMENT.has(x.op) && x.op !== "cast" && x.op !== "barrier");
    return computed.some((x) => rootSet.has(x) || (users.get(x) ?? []).some((u) => !inside.has(u))) ? undefined : inside;
  };
  // 2. Chained matmuls (attention, FFN memory) become one kernel; other matmul
  //    operands must be strided views of buffers.
  const chains = new Map<Node, ChainedMatmul>();
  const single = (n: Node) => (users.get(n)?.length ?? 0) === 1 && !rootSet.has(n);
  // Prefer giving the buffer to the value under a head split / transpose, so the
  // operand is a zero-copy view; copy the operand itself only when no view exists.
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
  for (const n of order) {
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
    if (v && single(p) && !isMat(p) && limits.fuse !== false && limits.fuseChains !== false) {
      const sm = softmaxScores(p, rank);
      const scores = sm ? sm.s : p;
      // Inside a chain, only real buffers bound the tree: values given a buffer for
      // fan-out within the chain (scores read by max and by exp) are inlined again.
      const hard = (x: Node) => (x.op === "input" || x.op === "param" || rootSet.has(x) || forced.has(x)) && !(sm?.parts.includes(x) ?? false);
      const first = soleMatmul(scores, hard, shapes);
      // A pointwise chain pays off for per-example keys (the FFN memory: Z + P_k);
      // with shared weights as keys (a plain MLP) two tuned matmuls are faster.
      const perExample = (x: Node) => shapes.get(x)!.slice(0, rank - 2).some((d) => d > 1);
      const q = first && viewOrCopy(first.src[0]);
      const k = first && viewOrCopy(first.src[1]);
      // the scores may be used several times, but only inside the chain (silu(s) = s·σ(s))
      const region = first && closedRegion(p, hard);
      if (first && q && k && region && shapes.get(first)!.length === rank && (sm || perExample(first.src[1]))) {
        for (const x of region) mat.delete(x);
        chains.set(n, { kind: sm ? "softmax" : "pointwise", first, q, k, scores, v });
        continue;
      }
    }
    for (const s of n.src) if (!asView(s)) mat.add(s);
  }
  // 3. Absorb a matmul into an epilogue: the elementwise region above it at its own
  //    shape (bias, activation, residual, scale) whose values are used only inside the
  //    region, up to one exit node. GELU reads its input twice and still qualifies. The
  //    exit gets the buffer instead of the matmul, so no kernel is added.
  const absorbedInto = new Set<Node>();
  const position = new Map(order.map((n, i) => [n, i]));
  /** a multi-exit epilogue's first exit → the others, which the same matmul kernel writes */
  const extraExits = new Map<Node, Node[]>();
  const secondaryExits = new Set<Node>();
  const exitContext: ExitContext = { order, users, position, mat, isRoot: (x) => rootSet.has(x) };
  const chainFirsts = new Set([...chains.values()].map((c) => c.first));
  const sameShape = (x: Node, n: Node) => shapes.get(x)!.join() === shapes.get(n)!.join();
  for (const n of order) {
    if (n.op !== "matmul" || rootSet.has(n) || chainFirsts.has(n) || limits.fuse === false) continue;
    // candidates: elementwise nodes reachable upward through same-shape elementwise users
    const region = new Set<Node>([n]);
    const queue = [n];
    while (queue.length && region.size < 32) {
      const x = queue.shift()!;
      if (x !== n && mat.has(x)) continue;
      for (const u of users.get(x) ?? [])
        // a buffer (an output, say) may be the exit, never an interior node: see `closed`
        if (!region.has(u) && ELEMENTWISE.has(u.op) && sameShape(u, n) && !absorbedInto.has(u)) {
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
        for (const src of x.src) if (region.has(src) && !inside.has(src)) {
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
        absorbedInto.add(e);
      }
      extraExits.set(exits[0], exits.slice(1));
      for (const e of exits.slice(1)) secondaryExits.add(e);
      continue;
    }
    if (end === n || hasMatmulBelow(end, n, mat)) continue;
    mat.delete(n);
    mat.add(end);
    absorbedInto.add(end);
  }

  // 3b. Row groups: an elementwise output and the last-axis reductions it needs
  //     (softmax, LayerNorm, RMSNorm and their backward) become one kernel.
  const rowGroups = new Map<Node, RowGroup>();
  //     Latest first, so a group also takes in earlier values it alone uses (LayerNorm's
  //     centred x, materialized for its two readers) instead of leaving them a kernel.
  for (const n of [...order].reverse()) {
    if (!mat.has(n) || limits.fuse === false) continue;
    const g = findRowGroup(n, { shapes, users, isMat, pinned: (x) => rootSet.has(x) || forced.has(x) || rowGroups.has(x) || x.op === "input" || x.op === "param", position: (x) => position.get(x)! });
    if (!g) continue;
    for (const x of g.absorbed) mat.delete(x);
    rowGroups.set(n, g);
  }

  // 3c. A batched matmul summed over a batch axis (a weight's gradient: Σ_b x_bᵀ·g_b)
  //     is one matmul over the concatenated K when both operands continue contiguously
  //     along k across that axis: no [batch, …] product in memory, no reduce kernel, and
  //     a long K instead of many short ones.
  const sumFolds = new Map<Node, number>();
  for (const n of order) {
    if (n.op !== "sum" || !mat.has(n) || limits.fuse === false) continue;
    const mm = n.src[0];
    const axis = (n.attrs as { axis: number }).axis;
    if (mm.op !== "matmul" || !mat.has(mm) || rootSet.has(mm) || forced.has(mm) || chains.has(mm) || users.get(mm)!.length !== 1) continue;
    const a = stridedView(mm.src[0], isMat, shapes, dims);
    const b = stridedView(mm.src[1], isMat, shapes, dims);
    if (!a || !b || !foldableSum(axis, shapes.get(mm.src[0])!, shapes.get(mm.src[1])!, a, b)) continue;
    mat.delete(mm);
    sumFolds.set(n, axis);
  }

  // 4. Kernels: one per materialized non-source node, with its inline tree.
  const kernels: Kernel[] = [];
  const tooWide = new Set<Node>();
  const inlineTree = (out: Node): { inputs: Node[]; mm?: Node; count: number; seen: ReadonlySet<Node> } => {
    const inputs = new Set<Node>();
    const seen = new Set<Node>();
    let mm: Node | undefined;
    const visit = (n: Node, top: boolean) => {
      if (!top && mat.has(n)) {
        inputs.add(n);
        return;
      }
      if (seen.has(n)) return;
      seen.add(n);
      // the outermost matmul is the kernel's (a chained first matmul lies below it)
      if (!top && n.op === "matmul") mm ??= n;
      for (const s of n.src) visit(s, false);
    };
    visit(out, true);
    return { inputs: [...inputs], mm, count: seen.size, seen };
  };
  // the exits of one epilogue share its matmul and the values before the split: count them once
  const joinTrees = (ts: ReturnType<typeof inlineTree>[]) => ({ inputs: [...new Set(ts.flatMap((t) => t.inputs))], mm: ts[0].mm, count: new Set(ts.flatMap((t) => [...t.seen])).size });
  for (const n of order) {
    if (!mat.has(n) || n.op === "input" || n.op === "param" || secondaryExits.has(n)) continue;
    const also = extraExits.get(n);
    const tree = also ? joinTrees([n, ...also].map(inlineTree)) : inlineTree(n);
    const mmOf = n.op === "matmul" ? n : tree.mm;
    // a plain matmul kernel binds A and B at 1 and 2 and each epilogue buffer from 3 (again, if shared)
    const bindings = mmOf && !chains.has(mmOf) ? 3 + epilogueInputs({ kind: "matmul", output: n, inputs: tree.inputs, matmul: { node: mmOf } as Kernel["matmul"], ...(also ? { also } : {}), fused: 0 }).length + (also?.length ?? 0) : tree.inputs.length + 1;
    if (bindings > limits.maxBindings) {
      // Too many bindings: materialize the widest inline operand and reschedule, once for
      // every such kernel of this pass (a reschedule per kernel made 32 layers quadratic).
      const wide = n.src.filter((s) => !mat.has(s) && !LEAF_CONST.has(s.op)).sort((a, b) => inlineTree(b).inputs.length - inlineTree(a).inputs.length)[0];
      if (!wide) throw new Error(`kernel for ${n.op} needs ${bindings} bindings, more than the device's ${limits.maxBindings}`);
      tooWide.add(wide);
      continue;
    }
    const row = rowGroups.get(n);
    if (row) {
      const softmax = row.axis === shapes.get(n)!.length - 1 && softmaxScores(n, shapes.get(n)!.length) !== undefined;
      kernels.push({ kind: "row", output: n, inputs: tree.inputs, row: { axis: row.axis, reductions: row.reductions, softmax }, fused: tree.count });
      continue;
    }
    const mmNode = n.op === "matmul" ? n : tree.mm;
    const chain = mmNode && chains.get(mmNode);
    if (mmNode && chain) {
      kernels.push({ kind: "attention", output: n, inputs: tree.inputs, matmul: { node: mmNode, a: chain.q, b: chain.v }, chain, fused: tree.count });
    } else if (mmNode) {
      const a = stridedView(mmNode.src[0], isMat, shapes, dims)!;
      const b = stridedView(mmNode.src[1], isMat, shapes, dims)!;
      const ins = new Set(tree.inputs);
      ins.add(a.base);
      ins.add(b.base);
      const sumAxis = sumFolds.get(n);
      kernels.push({ kind: "matmul", output: n, inputs: [...ins], matmul: { node: mmNode, a, b, ...(sumAxis === undefined ? {} : { sumAxis }) }, ...(also ? { also } : {}), fused: tree.count });
    } else kernels.push({ kind: n.op === "sum" || n.op === "rmax" ? "reduce" : n.op === "write_slot" ? "write-slot" : "elementwise", output: n, inputs: tree.inputs, fused: tree.count });
  }
  if (tooWide.size) return schedule(roots, dims, limits, new Set([...forced, ...tooWide]));
  const merged = limits.fuse === false ? kernels : mergeElementwise(kernels, shapes, isMat, limits.maxBindings);
  const transposedParams = transposeWeights(merged, shapes, dims, isMat);
  return { kernels: merged, materialized: mat, shapes, dims, transposedParams, irNodes: order.length };
}

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
 * `x @ wᵀ` with w stored [out, in] reads B with stride K along its columns, which
 * defeats vector loads (measured 19-24 vs 34-37 GFLOP/s on lavapipe). A 2-D parameter
 * that is read only as the B operand of plain matmul kernels is stored transposed
 * instead (the executor transposes it once at upload) when that makes B unit-stride.
 */
function transposeWeights(kernels: Kernel[], shapes: ReadonlyMap<Node, readonly number[]>, dims: Readonly<Record<string, number>>, isMat: (n: Node) => boolean): Set<Node> {
  const candidates = new Set<Node>();
  const banned = new Set<Node>();
  for (const k of kernels) {
    const plainB = k.kind === "matmul" && k.matmul ? k.matmul.b.base : undefined;
    for (const n of k.inputs) {
      if (n.op !== "param" || shapes.get(n)!.length !== 2) continue;
      const onlyAsB = n === plainB && k.matmul!.a.base !== n && !epilogueInputs(k).includes(n);
      if (onlyAsB && k.matmul!.b.strides.at(-1) !== 1 && k.matmul!.b.strides.at(-2) === 1) candidates.add(n);
      else banned.add(n);
    }
  }
  const chosen = new Set([...candidates].filter((n) => !banned.has(n)));
  kernels.forEach((k, i) => {
    if (k.kind !== "matmul" || !k.matmul || !chosen.has(k.matmul.b.base)) return;
    const b = stridedView(k.matmul.node.src[1], isMat, shapes, dims, chosen)!;
    kernels[i] = { ...k, matmul: { ...k.matmul, b } };
  });
  return chosen;
}

/**
 * The binding of a kernel's first extra output (`also`): after a matmul's epilogue
 * inputs, after any other kernel's inputs. Later ones follow in order.
 */
export function firstExtraOutputBinding(k: Kernel): number {
  return k.kind === "matmul" ? 3 + epilogueInputs(k).length : k.inputs.length + 1;
}

/**
 * Buffers the epilogue reads, in binding order from 3: every materialized node reached
 * from the output without passing through the matmul. An operand's base that the
 * epilogue also reads (`x @ w + x`) is bound a second time, read-only.
 */
export function epilogueInputs(k: Kernel): Node[] {
  const mm = k.matmul!;
  if (k.output === mm.node) return [];
  const inputs = new Set(k.inputs);
  const out = new Set<Node>();
  const seen = new Set<Node>();
  const visit = (x: Node, top: boolean): void => {
    if (x === mm.node || seen.has(x)) return;
    seen.add(x);
    if (!top && inputs.has(x)) {
      out.add(x);
      return;
    }
    x.src.forEach((s) => visit(s, false));
  };
  for (const o of [k.output, ...(k.also ?? [])]) visit(o, true);
  return [...out];
}
