import type { SourceMap } from "../grammar/diagnostics.ts";
import { shapeStr } from "./dims.ts";
import { topoOrder } from "./graph.ts";
import { attrsText, type Node, type Provenance } from "./ir.ts";

/** Text form of a graph: one SSA line per node, with the DSL location it came from. */
export function printGraph(roots: readonly { name: string; node: Node }[], provenance: Provenance, sources: SourceMap): string {
  const order = topoOrder(roots.map((r) => r.node));
  const local = new Map<number, number>();
  order.forEach((n, i) => local.set(n.id, i));
  const lines = order.map((n) => {
    const args = n.src.map((s) => `%${local.get(s.id)}`).join(", ");
    const attrs = attrsText(n);
    const head = `%${local.get(n.id)} = ${n.op}${args ? ` ${args}` : ""}${attrs ? ` {${attrs}}` : ""}`;
    const span = provenance.get(n.id);
    let where = "";
    if (span) {
      const p = sources.get(span.file)?.position(span.start);
      where = p ? `  # ${span.file}:${p.line}:${p.col}` : "";
    }
    return `${head} : ${n.dtype}${shapeStr(n.shape)}${where}`;
  });
  for (const r of roots) lines.push(`return ${r.name} = %${local.get(r.node.id)}`);
  return lines.join("\n");
}

/** Count of nodes per op, for summaries. */
export function opHistogram(roots: readonly Node[]): Map<string, number> {
  const h = new Map<string, number>();
  for (const n of topoOrder(roots)) h.set(n.op, (h.get(n.op) ?? 0) + 1);
  return new Map([...h].sort((a, b) => b[1] - a[1]));
}
