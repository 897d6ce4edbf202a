import { type GraphBuilder, topoOrder } from "./graph.ts";
import type { Node } from "./ir.ts";

/*
 * Recomputing layers in the backward ("activation checkpointing"). A training step keeps
 * every forward value its gradient reads until the backward reaches it: for a 7B LLaMA
 * at B=4, T=512 that is ~0.8 GiB per layer (attention scores and probabilities, the FFN's
 * gate, up and product, the rotated q and k). With recomputation a layer keeps only what
 * enters it; its backward first repeats the layer's forward from that, so one layer's
 * values are live at a time, for about one more forward of compute.
 */

/** The repeated block a forward node was built in ("language.layer.3" for "language.layer.3.attn.rope"), if any. */
export function layerOf(path: string | undefined): string | undefined {
  return path?.match(/^(.*?\.\d+)(?:\.|$)/)?.[1];
}

/**
 * The block of each activation of the forward: its instance path's (layerOf), else the one
 * block all its users belong to (a fusion's memory for LLM layer l, built outside the
 * layer but read only inside it), so it is recomputed with that block rather than kept.
 * Values with users in several blocks or none (shared features, the logits) and the
 * model's inputs have none.
 */
function blocks(g: GraphBuilder, order: readonly Node[], active: ReadonlySet<Node>, outputs: readonly Node[]): Map<Node, string> {
  const block = new Map<Node, string>();
  for (const n of order) {
    const b = active.has(n) ? layerOf(g.instancePath.get(n.id)) : undefined;
    if (b !== undefined) block.set(n, b);
  }
  const users = new Map<Node, Node[]>();
  for (const n of order) for (const s of n.src) users.set(s, [...(users.get(s) ?? []), n]);
  const roots = new Set(outputs);
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    // an input stays outside: a block's copies must reach it through a barrier, or they
    // would hash-cons back onto the forward's own nodes
    if (block.has(n) || !active.has(n) || roots.has(n) || n.op === "input") continue;
    const of = new Set((users.get(n) ?? []).map((u) => block.get(u)));
    const [only] = of;
    if (of.size === 1 && only !== undefined) block.set(n, only);
  }
  return block;
}

/** Nodes whose value depends on a model input (activations); the rest are parameters and constants. */
function activations(order: readonly Node[]): Set<Node> {
  const found = new Set<Node>();
  for (const n of order) if (n.op === "input" || n.src.some((s) => found.has(s))) found.add(n);
  return found;
}

/**
 * The gradients `grads` rebuilt so that every forward value of a repeated block (by its
 * instance path, see layerOf) that the backward reads is recomputed from the block's
 * inputs: a copy of the block's nodes down to the values that enter it, which it reads
 * through `barrier` so the copies do not hash-cons back onto the forward's nodes.
 * Parameters, constants and values outside every block are read as they are. `forward`:
 * the output the backward starts from (its ancestors are the forward). Values are
 * unchanged: the copies compute what the forward did, in the same order.
 */
export function recomputeLayers(g: GraphBuilder, forward: readonly Node[], grads: readonly Node[]): Node[] {
  const fwdOrder = topoOrder(forward);
  const isForward = new Set(fwdOrder);
  const active = activations(fwdOrder);
  const blockOf = blocks(g, fwdOrder, active, forward);
  const layer = (n: Node) => blockOf.get(n);
  const copies = new Map<Node, Node>();
  const barriers = new Map<Node, Node>();
  const [savedSpan, savedPath] = [g.currentSpan, g.currentPath];
  const stamp = (n: Node, suffix: string) => {
    g.currentSpan = g.provenance.get(n.id);
    const path = g.instancePath.get(n.id);
    g.currentPath = path === undefined ? undefined : `${path}${suffix}`;
  };
  /** `n` (of block `block`) as its recomputation; iterative, as a block can be hundreds of nodes deep */
  const recomputed = (root: Node, block: string): Node => {
    const stack: Node[] = [root];
    while (stack.length) {
      const n = stack[stack.length - 1];
      if (copies.has(n)) {
        stack.pop();
        continue;
      }
      const pending = n.src.filter((s) => layer(s) === block && !copies.has(s));
      if (pending.length) {
        stack.push(...pending);
        continue;
      }
      stack.pop();
      const src = n.src.map((s) => {
        if (!active.has(s)) return s;
        if (layer(s) === block) return copies.get(s)!;
        let b = barriers.get(s);
        if (!b) {
          stamp(s, "⟳");
          barriers.set(s, (b = g.make("barrier", [s], {})));
        }
        return b;
      });
      stamp(n, "⟳");
      copies.set(n, g.make(n.op, src, n.attrs));
    }
    return copies.get(root)!;
  };
  const rebuilt = new Map<Node, Node>();
  try {
    for (const n of topoOrder(grads)) {
      if (isForward.has(n)) continue;
      const src = n.src.map((s) => {
        const r = rebuilt.get(s);
        if (r) return r;
        const block = layer(s);
        return block === undefined ? s : recomputed(s, block);
      });
      stamp(n, "");
      rebuilt.set(n, src.every((s, i) => s === n.src[i]) ? n : g.make(n.op, src, n.attrs));
    }
  } finally {
    [g.currentSpan, g.currentPath] = [savedSpan, savedPath];
  }
  return grads.map((n) => rebuilt.get(n) ?? n);
}

/**
 * Nodes that only repeat forward work for a backward: barriers, and nodes every one of
 * whose activation sources is such a node. Scheduling visits them after a node's other
 * sources, so a block is recomputed right before its own backward needs it, after the
 * backward of the blocks above has finished (not at the start of the backward, where all
 * recomputed blocks would be live at once).
 */
function recomputations(order: readonly Node[]): Set<Node> {
  const active = activations(order);
  const found = new Set<Node>();
  for (const n of order) {
    const inputs = n.src.filter((s) => active.has(s));
    if (n.op === "barrier" || (inputs.length && inputs.every((s) => found.has(s)))) found.add(n);
  }
  return found;
}

/**
 * The order kernels run in: sources before users, depth first from the roots. With
 * recomputed blocks, each is recomputed as late as its backward allows, and every other
 * node runs as soon as its sources exist: a gradient's contribution to a value shared by
 * all blocks (a fusion's projected features) is then added up block by block instead of
 * each block's gradient staying live until the sum is reached at the end.
 */
export function executionOrder(roots: readonly Node[]): Node[] {
  const plain = topoOrder(roots);
  if (!plain.some((n) => n.op === "barrier")) return plain;
  const late = recomputations(plain);
  const users = new Map<Node, Node[]>();
  for (const n of plain) for (const s of new Set(n.src)) users.set(s, [...(users.get(s) ?? []), n]);
  const done = new Set<Node>();
  const order: Node[] = [];
  const emit = (first: Node) => {
    const ready = [first];
    while (ready.length) {
      const n = ready.pop()!;
      if (done.has(n)) continue;
      done.add(n);
      order.push(n);
      for (const u of users.get(n) ?? []) if (!late.has(u) && !done.has(u) && u.src.every((s) => done.has(s))) ready.push(u);
    }
  };
  for (const n of topoOrder(roots, (n) => [...n.src.filter((s) => !late.has(s)), ...n.src.filter((s) => late.has(s))])) emit(n);
  return order;
}
