import type { Command } from "commander";
import { shapeStr } from "../../compiler/dims.ts";
import { fmtCount, fmtInt, paramRows, trainableGroups } from "../../compiler/param-report.ts";
import { sourceLines } from "../../compiler/source-report.ts";
import { loadTokenizer } from "../../data/tokenizers/load.ts";
import { shownPath } from "../../compiler/weight-sources.ts";
import { loadModel, positiveInt } from "./load.ts";

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

export function registerCheck(program: Command): void {
  program
    .command("check")
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to check (default: the file's first model)")
    .option("--depth <n>", "depth of the parameter table", positiveInt, 2)
    .description("parse, link, elaborate and shape-check a model; print its signature and parameter table")
    .action(async (file: string, opts: { model?: string; depth: number }) => {
      const m = loadModel(file, opts.model);
      const out: string[] = [];
      out.push(`model ${m.name}  (${file})`, "");
      out.push("inputs:");
      for (const i of m.inputs) out.push(`  ${pad(i.name, 14)} ${i.dtype}${shapeStr(i.shape)}`);
      out.push("outputs:");
      for (const o of m.outputs) out.push(`  ${pad(o.name, 14)} ${o.node.dtype}${shapeStr(o.node.shape)}`);
      if (m.symbols.length) out.push(`run-time dims: ${m.symbols.join(", ")}`);
      if (m.fusions.length) {
        out.push("", "fusions:");
        for (const f of m.fusions) {
          const t = f.targets;
          const shown = t.length > 3 ? `${t.slice(0, 2).join(", ")}, … ${t[t.length - 1]}` : t.join(", ");
          out.push(`  ${f.name} = ${f.block}${f.each ? " (one per target)" : ""} → ${t.length} site${t.length === 1 ? "" : "s"}: ${shown}`);
        }
      }
      const rows = paramRows(m.root, opts.depth);
      const w = Math.max(24, ...rows.map((r) => r.label.length + 2 * r.depth + r.block.length + 3));
      out.push("", `${pad("parameters", w)} ${pad("total", 15, true)} ${pad("trainable", 13, true)}`);
      for (const r of rows) {
        const kind = r.block === "param" ? "" : ` (${r.block})${r.frozen && r.depth === 1 ? " frozen" : ""}`;
        const label = `${"  ".repeat(r.depth - 1)}${r.label}${kind}`;
        out.push(`  ${pad(label, w - 2)} ${pad(fmtInt(r.total), 15, true)} ${pad(fmtInt(r.trainable), 13, true)}`);
      }
      const total = m.params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
      const trainable = m.params.filter((p) => p.trainable).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
      out.push(`  ${pad("all", w - 2)} ${pad(fmtInt(total), 15, true)} ${pad(fmtInt(trainable), 13, true)}`);
      out.push("", `trainable: ${fmtInt(trainable)} (${fmtCount(trainable)}) = ${((100 * trainable) / Math.max(1, total)).toFixed(4)}% of ${fmtCount(total)}`);
      const groups = trainableGroups(m.params);
      if (groups.length) {
        out.push("trainable tensors:");
        const nw = Math.max(...groups.map((g) => g.name.length));
        for (const g of groups)
          out.push(
            `  ${pad(g.name, nw)}  ${pad(`[${g.shape.join(", ")}]`, 14)}${g.copies > 1 ? pad(`×${g.copies}`, 5, true) : "     "} ${pad(fmtInt(g.total), 12, true)}`,
          );
      }
      out.push("", "weights:", ...sourceLines(m.params));
      if (m.tokenizer) out.push(`tokenizer: ${shownPath(m.tokenizer)} (${(await loadTokenizer(m.tokenizer)).size} tokens)`);
      process.stdout.write(`${out.join("\n")}\n`);
    });
}
