import type { Instance, ParamInfo } from "./values.ts";

/** One row of the parameter table: a block instance (or a group of repeated ones). */
export interface ParamRow {
  readonly depth: number;
  readonly label: string;
  readonly block: string;
  readonly total: number;
  readonly trainable: number;
  readonly frozen: boolean;
}

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function sums(inst: Instance): { total: number; trainable: number } {
  let total = 0;
  let trainable = 0;
  for (const p of inst.params.values()) {
    const n = count(p.shape);
    total += n;
    if (p.trainable) trainable += n;
  }
  for (const c of inst.children.values())
    for (const k of Array.isArray(c) ? c : [c]) {
      const s = sums(k);
      total += s.total;
      trainable += s.trainable;
    }
  return { total, trainable };
}

/**
 * Rows for the instance tree down to `maxDepth`; the copies of a repeat are one row
 * (`layer[0..31] ×32`), since they share a block and a size.
 */
export function paramRows(root: Instance, maxDepth: number): ParamRow[] {
  const rows: ParamRow[] = [];
  const visit = (inst: Instance | Instance[], name: string, depth: number) => {
    const list = Array.isArray(inst) ? inst : [inst];
    let total = 0;
    let trainable = 0;
    for (const i of list) {
      const s = sums(i);
      total += s.total;
      trainable += s.trainable;
    }
    const first = list[0];
    const label = Array.isArray(inst) ? `${name}[0..${list.length - 1}] ×${list.length}` : name;
    rows.push({ depth, label, block: first.decl.name.name, total, trainable, frozen: first.frozen });
    if (depth >= maxDepth) return;
    for (const [pname, p] of first.params) {
      const n = count(p.shape) * list.length;
      rows.push({
        depth: depth + 1,
        label: `${pname} [${p.shape.join(", ")}]`,
        block: "param",
        total: n,
        trainable: p.trainable ? n : 0,
        frozen: !p.trainable,
      });
    }
    for (const [cname, c] of first.children) visit(Array.isArray(inst) ? list.flatMap((i) => i.children.get(cname)!) : c, cname, depth + 1);
  };
  for (const [name, c] of root.children) visit(c, name, 1);
  return rows;
}

/** Trainable tensors grouped across repeat copies: `adapters.*.down [12, 1024] ×24`. */
export function trainableGroups(params: readonly ParamInfo[]): { name: string; shape: readonly number[]; copies: number; total: number }[] {
  const groups = new Map<string, { name: string; shape: readonly number[]; copies: number; total: number }>();
  for (const p of params) {
    if (!p.trainable) continue;
    const name = p.name.replace(/\.\d+(?=\.)/g, ".*");
    const key = `${name}|${p.shape.join("x")}`;
    const g = groups.get(key) ?? { name, shape: p.shape, copies: 0, total: 0 };
    g.copies++;
    g.total += count(p.shape);
    groups.set(key, g);
  }
  return [...groups.values()];
}

export const fmtInt = (n: number): string => n.toLocaleString("en-US");

export function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}
