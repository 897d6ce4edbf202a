import { slotMask } from "./decoding.ts";
import { dimAdd, dimEq, type Shape, shapeEq, shapeStr } from "./dims.ts";
import type { GraphBuilder } from "./graph.ts";
import { topoOrder } from "./graph.ts";
import type { Node, Op } from "./ir.ts";
import { TensorOps } from "./tensor-ops.ts";

/**
 * What a gradient rule sees: the forward node `n` (its value is `n` itself, so rules
 * reuse forward results such as exp(x) instead of recomputing them), the incoming
 * gradient `g` (same shape as `n`), and which sources need a gradient at all.
 */
interface GradContext<O extends Op> {
  readonly t: TensorOps;
  readonly n: Node<O>;
  readonly g: Node;
  readonly need: (i: number) => boolean;
}

/** Gradient contribution to each source (undefined: none flows, e.g. to int indices or masks). */
type GradRule<O extends Op> = (c: GradContext<O>) => readonly (Node | undefined)[];

const leaf: GradRule<Op> = () => [];
const none: GradRule<Op> = ({ n }) => n.src.map(() => undefined);

/** Sums `g` over the axes where `shape` has 1 and `g` does not: the adjoint of broadcasting to g's shape. */
function unbroadcast(t: TensorOps, g: Node, shape: Shape): Node {
  let out = g;
  shape.forEach((d, i) => {
    if (d === 1 && !dimEq(g.shape[i], 1)) out = t.make("sum", [out], { axis: i });
  });
  return out;
}

/** d/dx of gather(table, idx): scatter-add of g into the table's rows, as one-hot(idx)ᵀ @ g (no scatter op needed). */
function gatherGrad(t: TensorOps, table: Node, idx: Node, g: Node): Node {
  const [V, ...rest] = table.shape;
  const I = idx.shape;
  const rows = rest.reduce<number>((a, d) => {
    if (typeof d !== "number") throw new Error(`gradient of gather: the table's row shape ${shapeStr(rest)} must be static`);
    return a * d;
  }, 1);
  const onehot = t.binary("cmpeq", t.unsqueeze(t.float(idx), -1), t.reshape(t.arange(V), [...I.map(() => 1), V]));
  const g2 = t.reshape(g, [...I, rows]);
  if (I.length === 0) return t.reshape(t.mul(t.reshape(onehot, [V, 1]), g2), table.shape);
  // [...lead, V, last] @ [...lead, last, rows] → [...lead, V, rows], then sum the lead axes
  let grad = t.matmul(t.transposeLast(onehot), g2);
  for (let k = 0; k < I.length - 1; k++) grad = t.sum(grad, 0);
  return t.reshape(grad, table.shape);
}

const float = (n: Node) => n.dtype === "f32";

export const gradRules: { [O in Op]: GradRule<O> } = {
  input: leaf,
  param: leaf,
  const: leaf,
  size: leaf,
  arange: leaf,
  neg: ({ t, g }) => [t.unary("neg", g)],
  recip: ({ t, n, g }) => [t.unary("neg", t.mul(g, t.mul(n, n)))],
  exp: ({ t, n, g }) => [t.mul(g, n)],
  log: ({ t, n, g }) => [t.div(g, n.src[0])],
  sqrt: ({ t, n, g }) => [t.div(t.mul(g, t.scalar(0.5)), n)],
  sin: ({ t, n, g }) => [t.mul(g, t.unary("cos", n.src[0]))],
  cos: ({ t, n, g }) => [t.unary("neg", t.mul(g, t.unary("sin", n.src[0])))],
  tanh: ({ t, n, g }) => [t.mul(g, t.not(t.mul(n, n)))],
  erf: ({ t, n, g }) => {
    const x = n.src[0];
    return [t.mul(g, t.mul(t.scalar(2 / Math.sqrt(Math.PI)), t.unary("exp", t.unary("neg", t.mul(x, x)))))];
  },
  cast: none,
  add: ({ g }) => [g, g],
  mul: ({ t, n, g, need }) => [need(0) ? t.mul(g, n.src[1]) : undefined, need(1) ? t.mul(g, n.src[0]) : undefined],
  // ties go to the first operand, as a subgradient
  max: ({ t, n, g }) => {
    const bWins = t.binary("cmplt", n.src[0], n.src[1]);
    const zero = t.scalar(0);
    return [t.where(bWins, zero, g), t.where(bWins, g, zero)];
  },
  // no gradient flows into an int key or counter
  cmplt: none,
  cmpeq: none,
  hash: none,
  where: ({ t, n, g }) => {
    const zero = t.scalar(0);
    return [undefined, t.where(n.src[0], g, zero), t.where(n.src[0], zero, g)];
  },
  sum: ({ t, n, g }) => [t.make("expand", [g], { shape: n.src[0].shape })],
  // the gradient is shared evenly between tied maxima, so it stays the same whatever the order
  rmax: ({ t, n, g }) => {
    if (n.attrs.detached) return [undefined];
    const x = n.src[0];
    const hit = t.binary("cmpeq", x, t.make("expand", [n], { shape: x.shape }));
    const share = t.div(g, t.make("sum", [hit], { axis: n.attrs.axis }));
    return [t.mul(hit, t.make("expand", [share], { shape: x.shape }))];
  },
  reshape: ({ t, n, g }) => [t.reshape(g, n.src[0].shape)],
  permute: ({ t, n, g }) => {
    const inv: number[] = [];
    n.attrs.perm.forEach((p, i) => (inv[p] = i));
    return [t.permute(g, inv)];
  },
  expand: ({ t, n, g }) => [unbroadcast(t, g, n.src[0].shape)],
  slice: ({ t, n, g }) => {
    const x = n.src[0];
    return [t.make("pad", [g], { before: n.attrs.start, after: x.shape.map((d, i) => dimAdd(d, n.attrs.end[i], -1)) })];
  },
  pad: ({ t, n, g }) => {
    const x = n.src[0];
    return [t.make("slice", [g], { start: n.attrs.before, end: x.shape.map((d, i) => dimAdd(n.attrs.before[i], d)) })];
  },
  concat: ({ t, n, g, need }) => {
    let at: Shape[number] = 0;
    return n.src.map((s, i) => {
      const from = at;
      at = dimAdd(at, s.shape[n.attrs.axis]);
      return need(i) ? t.slice(g, n.attrs.axis, from, at) : undefined;
    });
  },
  matmul: ({ t, n, g, need }) => {
    const [a, b] = n.src;
    return [
      need(0) ? unbroadcast(t, t.matmul(g, t.transposeLast(b)), a.shape) : undefined,
      need(1) ? unbroadcast(t, t.matmul(t.transposeLast(a), g), b.shape) : undefined,
    ];
  },
  gather: ({ t, n, g, need }) => [need(0) ? gatherGrad(t, n.src[0], n.src[1], g) : undefined, undefined],
  // the written slot's gradient goes to x, every other slot's to old; none to the positions
  write_slot: ({ t, n, g, need }) => {
    const [old, , pos] = n.src;
    const written = slotMask(t, old.shape, pos, n.attrs.axis);
    const zero = t.scalar(0);
    return [need(0) ? t.where(written, zero, g) : undefined, need(1) ? t.sum(t.where(written, g, zero), n.attrs.axis, true) : undefined, undefined];
  },
  barrier: ({ g }) => [g],
};

/**
 * Reverse-mode gradients of a scalar `loss` with respect to `wrt`, as ordinary IR in the
 * same graph (so they go through the same passes, fusion and planning as the forward).
 * Only nodes on a path from some `wrt` to the loss are differentiated: frozen branches
 * cost nothing. A `wrt` the loss does not depend on gets a zero gradient.
 */
export function gradients(graph: GraphBuilder, loss: Node, wrt: readonly Node[]): Node[] {
  if (loss.shape.length !== 0 || !float(loss)) throw new Error(`gradients need a float scalar loss, got ${loss.dtype}${shapeStr(loss.shape)}`);
  return backprop(graph, [{ node: loss, grad: new TensorOps(graph).scalar(1) }], wrt);
}

/** An output with its known gradient: lets a loss supply its own fused gradient (e.g. softmax − one-hot). */
export interface GradSeed {
  readonly node: Node;
  readonly grad: Node;
}

/** Reverse mode from seed gradients on any nodes (the general form of `gradients`). */
export function backprop(graph: GraphBuilder, seeds: readonly GradSeed[], wrt: readonly Node[]): Node[] {
  const t = new TensorOps(graph);
  for (const s of seeds)
    if (!shapeEq(s.grad.shape, s.node.shape)) throw new Error(`seed gradient ${shapeStr(s.grad.shape)} does not match its node ${shapeStr(s.node.shape)}`);
  const order = topoOrder(seeds.map((s) => s.node));
  const targets = new Set(wrt.map((n) => n.id));
  const needs = new Set<number>();
  for (const n of order) if (targets.has(n.id) || (float(n) && n.src.some((s) => needs.has(s.id)))) needs.add(n.id);

  const grads = new Map<number, Node>();
  for (const s of seeds) grads.set(s.node.id, grads.has(s.node.id) ? t.add(grads.get(s.node.id)!, s.grad) : s.grad);
  const savedSpan = graph.currentSpan;
  const savedPath = graph.currentPath;
  try {
    for (let k = order.length - 1; k >= 0; k--) {
      const n = order[k];
      const g = grads.get(n.id);
      if (!g || !needs.has(n.id) || n.src.length === 0) continue;
      // backward nodes are stamped with their forward node's origin, so plans and profiles point at the DSL
      graph.currentSpan = graph.provenance.get(n.id);
      const path = graph.instancePath.get(n.id);
      graph.currentPath = path === undefined ? undefined : `${path}∇`;
      const need = (i: number) => needs.has(n.src[i].id);
      const contrib = (gradRules[n.op] as GradRule<Op>)({ t, n, g, need });
      n.src.forEach((s, i) => {
        const c = contrib[i];
        if (!c || !need(i)) return;
        if (!shapeEq(c.shape, s.shape))
          throw new Error(`internal: gradient rule for ${n.op} gave ${shapeStr(c.shape)} for an operand of shape ${shapeStr(s.shape)}`);
        const prev = grads.get(s.id);
        grads.set(s.id, prev ? t.add(prev, c) : c);
      });
    }
  } finally {
    graph.currentSpan = savedSpan;
    graph.currentPath = savedPath;
  }
  return wrt.map((p) => grads.get(p.id) ?? t.expand(t.scalar(0), p.shape));
}
