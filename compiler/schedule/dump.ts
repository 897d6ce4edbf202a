import type { SourceMap } from "../../grammar/diagnostics.ts";
import type { Node, Provenance } from "../ir.ts";
import type { ScheduleState } from "./state.ts";

/**
 * The scheduler's state as text, for `--dump-after PASS`: each buffer the kernels will
 * write (`%n`: the node's position in execution order) with what groups it (a chained matmul, a row group, an epilogue's exits, a folded batch sum), then
 * the kernels once a pass has made them: kind, output, the buffers read, IR nodes fused.
 */
export function dumpSchedule(s: ScheduleState, provenance: Provenance, sources: SourceMap): string {
  const local = new Map(s.order.map((n, i) => [n, i]));
  const name = (n: Node) => `%${local.get(n)}`;
  const where = (n: Node) => {
    const span = provenance.get(n.id);
    const p = span && sources.get(span.file)?.position(span.start);
    return p ? `  # ${span.file}:${p.line}:${p.col}` : "";
  };
  const chained = new Map([...s.chains].map(([mm, c]) => [mm, c]));
  const computed = s.order.filter((n) => s.mat.has(n) && n.op !== "input" && n.op !== "param");
  const lines = [`# ${computed.length} computed buffers, ${s.mat.size - computed.length} inputs and parameters, ${s.order.length} IR nodes`];
  for (const n of computed) {
    const tags: string[] = [];
    const c = chained.get(n);
    if (c) tags.push(`chain ${c.kind}: scores ${name(c.first)}`);
    const row = s.rowGroups.get(n);
    if (row) tags.push(`row group along ${row.axis}: ${row.reductions.map(name).join(" ")}`);
    const also = s.extraExits.get(n);
    if (also) tags.push(`epilogue exits with ${also.map(name).join(" ")}`);
    else if (s.absorbedInto.has(n)) tags.push("epilogue exit");
    if (s.secondaryExits.has(n)) tags.push("epilogue exit (secondary)");
    if (s.sumFolds.has(n)) tags.push(`batch sum folded into its matmul (axis ${s.sumFolds.get(n)})`);
    if (s.forced.has(n)) tags.push("forced");
    lines.push(`${name(n)} = ${n.op} [${s.shapes.get(n)!.join(", ")}]${tags.length ? ` {${tags.join("; ")}}` : ""}${where(n)}`);
  }
  if (s.kernels.length) {
    lines.push(`# ${s.kernels.length} kernels`);
    s.kernels.forEach((k, i) => {
      const outs = [k.output, ...(k.also ?? [])].map(name).join(" ");
      lines.push(`#${i} ${k.kind} ${outs} <- ${k.inputs.map(name).join(" ") || "(nothing)"} (${k.fused} nodes)`);
    });
  }
  if (s.transposedParams.size) lines.push(`# stored transposed: ${[...s.transposedParams].map(name).join(" ")}`);
  return lines.join("\n");
}
