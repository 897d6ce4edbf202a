import type { Span } from "../grammar/source.ts";
import { attrsKey, type Node, type Op, type OpAttrs } from "./ir.ts";
import { shapeRules } from "./shape-rules.ts";

/**
 * Owns the hash-cons table: building a node identical to an existing one returns
 * the existing node, so common subexpressions are shared for free.
 */
export class GraphBuilder {
  private readonly table = new Map<string, Node>();
  private readonly nodes: Node[] = [];
  /** where each node was first built in DSL source */
  readonly provenance = new Map<number, Span>();
  /** the span the elaborator is evaluating; stamped on new nodes */
  currentSpan: Span | undefined;
  /** the block instance each node was built in (`language.layer.3.attn`), for plans and profiles */
  readonly instancePath = new Map<number, string>();
  currentPath: string | undefined;

  make<O extends Op>(op: O, src: readonly Node[], attrs: OpAttrs[O]): Node<O> {
    const key = `${op}(${src.map((s) => s.id).join(",")})${attrsKey(attrs)}`;
    const hit = this.table.get(key);
    if (hit) return hit as Node<O>;
    const { shape, dtype } = shapeRules[op](src, attrs);
    const node: Node<O> = { id: this.nodes.length, op, src, attrs, shape, dtype, key };
    this.table.set(key, node);
    this.nodes.push(node);
    if (this.currentSpan) this.provenance.set(node.id, this.currentSpan);
    if (this.currentPath !== undefined) this.instancePath.set(node.id, this.currentPath);
    return node;
  }

  get size(): number {
    return this.nodes.length;
  }
}

/**
 * Nodes reachable from the roots, sources before users (iterative: graphs get deep),
 * depth first, each node's sources in the order `sources` gives (default: its own).
 */
export function topoOrder(roots: readonly Node[], sources: (n: Node) => readonly Node[] = (n) => n.src): Node[] {
  const seen = new Set<number>();
  const order: Node[] = [];
  const stack: [Node, number, readonly Node[]][] = roots.map((r) => [r, 0, sources(r)]);
  stack.reverse();
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [n, i, src] = top;
    if (i === 0 && seen.has(n.id)) {
      stack.pop();
      continue;
    }
    if (i < src.length) {
      top[1] = i + 1;
      const s = src[i];
      if (!seen.has(s.id)) stack.push([s, 0, sources(s)]);
    } else {
      stack.pop();
      if (!seen.has(n.id)) {
        seen.add(n.id);
        order.push(n);
      }
    }
  }
  return order;
}
