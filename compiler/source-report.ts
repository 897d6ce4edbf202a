import { transformText } from "../io/checkpoints/transforms.ts";
import { initText } from "./init-rules.ts";
import type { ParamInfo } from "./values.ts";

const count = (ps: readonly ParamInfo[]) => ps.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);

/** Where one parameter's value comes from, in words: the checkpoint tensor (`{l}` for the copy) and its transform, or the init rule. */
function origin(p: ParamInfo): string {
  if (!p.source) return `init ${initText(p.init)}`;
  const t = transformText(p.source.transform);
  // copies of a repeat share a line: their indices (a `{path}` table spells them out) read `{l}`
  return `${p.source.pattern.replace(/(^|\.)\d+(?=\.|$)/g, "$1{l}")}${t ? ` (${t})` : ""}`;
}

/**
 * `dehvf check`'s account of where every parameter's value comes from, per top-level
 * instance: one line for an instance whose parameters all follow their init rules; for
 * one fed from a checkpoint, the file and a line per parameter (repeat copies grouped,
 * `{l}` standing for the copy in the checkpoint's name).
 */
export function sourceLines(params: readonly ParamInfo[]): string[] {
  const byTop = new Map<string, ParamInfo[]>();
  for (const p of params) {
    const top = p.name.includes(".") ? p.name.slice(0, p.name.indexOf(".")) : "(model)";
    byTop.set(top, [...(byTop.get(top) ?? []), p]);
  }
  const out: string[] = [];
  const w = Math.max(...[...byTop.keys()].map((k) => k.length));
  for (const [top, ps] of byTop) {
    const sourced = ps.filter((p) => p.source);
    if (!sourced.length) {
      out.push(`  ${top.padEnd(w)}  init rules (seeded): ${ps.length} tensors, ${count(ps).toLocaleString("en-US")} values`);
      continue;
    }
    const files = [...new Set(sourced.map((p) => `${p.source!.written} (${p.source!.family})`))];
    const rest = ps.length - sourced.length;
    out.push(
      `  ${top.padEnd(w)}  from ${files.join(", ")}: ${sourced.length} tensors, ${count(sourced).toLocaleString("en-US")} values${rest ? `; ${rest} by init rules` : ""}`,
    );
    const groups = new Map<string, { name: string; copies: number; origin: string }>();
    for (const p of ps) {
      const name = (top === "(model)" ? p.name : p.name.slice(top.length + 1)).replace(/(^|\.)\d+(?=\.|$)/g, "$1*");
      const o = origin(p);
      const key = `${name}|${o}`;
      const g = groups.get(key) ?? { name, copies: 0, origin: o };
      g.copies++;
      groups.set(key, g);
    }
    const nw = Math.max(...[...groups.values()].map((g) => g.name.length + (g.copies > 1 ? ` ×${g.copies}`.length : 0)));
    for (const g of groups.values()) out.push(`    ${`${g.name}${g.copies > 1 ? ` ×${g.copies}` : ""}`.padEnd(nw)}  ← ${g.origin}`);
  }
  return out;
}
