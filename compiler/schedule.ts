import { shapeEval } from "./dims.ts";
import { topoOrder } from "./graph.ts";
import type { Node, Op } from "./ir.ts";
import type { Root } from "./pipeline.ts";
import { numel, stridesOf } from "./tensor.ts";

/**
 * The scheduler decides which IR nodes get a buffer ("materialized") and groups
 * everything else into the kernels that compute those buffers. Movement ops never get
 * a buffer of their own: they become index math inside their consumers (zero-copy
 * transposes, broadcasts, slices). Elementwise chains fold into the kernel that needs
 * them; a matmul folds into its consumer's kernel as the accumulator of an epilogue.
 */

export type KernelKind = "elementwise" | "reduce" | "matmul";

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
  /** for matmul kernels: the matmul node (its result is `acc` inside the epilogue) and operand views */
  readonly matmul?: { readonly node: Node; readonly a: StridedView; readonly b: StridedView };
  /** number of IR nodes this kernel computes (itself plus what it inlines) */
  readonly fused: number;
}

export interface Schedule {
  readonly kernels: readonly Kernel[];
  readonly materialized: ReadonlySet<Node>;
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  /** IR nodes reachable from the roots */
  readonly irNodes: number;
}

export interface ScheduleLimits {
  /** storage buffers one kernel may bind (output included) */
  readonly maxBindings: number;
}

const ELEMENTWISE = new Set<Op>(["neg", "recip", "exp", "log", "sqrt", "sin", "cos", "tanh", "erf", "cast", "add", "mul", "max", "cmplt", "cmpeq", "where"]);
const MOVEMENT = new Set<Op>(["reshape", "permute", "expand", "slice", "pad", "concat"]);
const LEAF_CONST = new Set<Op>(["const", "size", "arange"]);
const ALWAYS = new Set<Op>(["input", "param", "sum", "rmax"]);

export const isElementwise = (op: Op) => ELEMENTWISE.has(op);

export function concreteShapes(order: readonly Node[], dims: Readonly<Record<string, number>>): Map<Node, number[]> {
  return new Map(order.map((n) => [n, shapeEval(n.shape, dims)]));
}

/**
 * A chain of reshape/permute/expand/slice over a materialized node, as offset+strides,
 * or undefined when the chain needs a copy. Matmul operands must be views so the
 * matmul kernel can read them directly (a transposed weight costs nothing).
 */
export function stridedView(n: Node, isMat: (n: Node) => boolean, shapes: ReadonlyMap<Node, readonly number[]>): StridedView | undefined {
  if (isMat(n)) return { base: n, offset: 0, strides: stridesOf(shapes.get(n)!) };
  const src = n.src[0];
  const inner = () => stridedView(src, isMat, shapes);
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
      const start = shapeEval((n.attrs as { start: Node["shape"] }).start, {}).map(Number);
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

/** Cheap to recompute wherever used: constants and pure index remaps of buffers/constants. */
function cheap(n: Node, isMat: (n: Node) => boolean): boolean {
  if (isMat(n) || LEAF_CONST.has(n.op)) return true;
  if (n.op === "reshape" || n.op === "permute" || n.op === "expand" || n.op === "slice" || n.op === "cast") return cheap(n.src[0], isMat);
  return false;
}

/** `forced`: nodes that must get a buffer (grown when a kernel would exceed the binding limit). */
export function schedule(roots: readonly Root[], dims: Readonly<Record<string, number>>, limits: ScheduleLimits, forced: ReadonlySet<Node> = new Set()): Schedule {
  const order = topoOrder(roots.map((r) => r.node));
  const shapes = concreteShapes(order, dims);
  const users = new Map<Node, Node[]>();
  for (const n of order) for (const s of n.src) users.set(s, [...(users.get(s) ?? []), n]);
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
  for (const n of [...order].reverse()) {
    if (mat.has(n) || LEAF_CONST.has(n.op)) continue;
    const us = users.get(n) ?? [];
    const shared = us.length > 1 && !cheap(n, isMat);
    const broadcast = us.some((u) => u.op === "expand" && numel(shapes.get(u)!) > numel(shapes.get(n)!)) && !cheap(n, isMat);
    const gathered = us.some((u) => u.op === "gather" && u.src[0] === n) && !cheap(n, isMat);
    if (shared || broadcast || gathered) mat.add(n);
  }
  // 2. Matmul operands must be strided views of buffers.
  for (const n of order) {
    if (n.op !== "matmul") continue;
    for (const s of n.src) if (!stridedView(s, isMat, shapes)) mat.add(s);
  }
  // 3. Absorb a matmul into its consumer's kernel when the path to that kernel's output
  //    is single-consumer elementwise at the matmul's own shape (an epilogue).
  const absorbedInto = new Map<Node, Node>();
  for (const n of order) {
    if (n.op !== "matmul" || rootSet.has(n)) continue;
    let cur = n;
    let target: Node | undefined;
    for (;;) {
      const us = users.get(cur) ?? [];
      if (us.length !== 1) break;
      const u = us[0];
      if (!ELEMENTWISE.has(u.op) || shapes.get(u)!.join() !== shapes.get(n)!.join()) break;
      if (mat.has(u)) {
        target = u;
        break;
      }
      cur = u;
    }
    if (target && ![...absorbedInto.values()].includes(target)) {
      mat.delete(n);
      absorbedInto.set(n, target);
    }
  }

  // 4. Kernels: one per materialized non-source node, with its inline tree.
  const kernels: Kernel[] = [];
  const inlineTree = (out: Node): { inputs: Node[]; mm?: Node; count: number } => {
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
      if (!top && n.op === "matmul") mm = n;
      for (const s of n.src) visit(s, false);
    };
    visit(out, true);
    return { inputs: [...inputs], mm, count: seen.size };
  };
  for (const n of order) {
    if (!mat.has(n) || n.op === "input" || n.op === "param") continue;
    const tree = inlineTree(n);
    if (tree.inputs.length + 1 > limits.maxBindings) {
      // Too many bindings: materialize the widest inline operand and reschedule.
      const wide = n.src.filter((s) => !mat.has(s) && !LEAF_CONST.has(s.op)).sort((a, b) => inlineTree(b).inputs.length - inlineTree(a).inputs.length)[0];
      if (!wide) throw new Error(`kernel for ${n.op} needs ${tree.inputs.length + 1} bindings, more than the device's ${limits.maxBindings}`);
      return schedule(roots, dims, limits, new Set([...forced, wide]));
    }
    const mmNode = n.op === "matmul" ? n : tree.mm;
    if (mmNode) {
      const a = stridedView(mmNode.src[0], isMat, shapes)!;
      const b = stridedView(mmNode.src[1], isMat, shapes)!;
      const ins = new Set(tree.inputs);
      ins.add(a.base);
      ins.add(b.base);
      kernels.push({ kind: "matmul", output: n, inputs: [...ins], matmul: { node: mmNode, a, b }, fused: tree.count });
    } else kernels.push({ kind: n.op === "sum" || n.op === "rmax" ? "reduce" : "elementwise", output: n, inputs: tree.inputs, fused: tree.count });
  }
  return { kernels, materialized: mat, shapes, irNodes: order.length };
}
