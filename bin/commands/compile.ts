import type { Command } from "commander";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { opHistogram, printGraph } from "../../compiler/print-graph.ts";
import { runPipeline, STAGES } from "../../compiler/pipeline.ts";
import { loadModel } from "./load.ts";

const EMITS = ["graph", "summary"] as const;

export function registerCompile(program: Command): void {
  program
    .command("compile")
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to compile (default: the file's first model)")
    .option("--emit <what>", `what to print: ${EMITS.join(", ")}`, "summary")
    .option("--dump-after <stage>", `also print the graph after a stage (${STAGES.join(", ")}); repeatable`, (v: string, acc: string[]) => [...acc, v], [] as string[])
    .description("compile a model through the pass pipeline and print the IR")
    .action((file: string, opts: { model?: string; emit: string; dumpAfter: string[] }) => {
      if (!(EMITS as readonly string[]).includes(opts.emit)) throw new DehvfError([{ phase: "input", message: `unknown --emit "${opts.emit}"`, hint: `choose one of ${EMITS.join(", ")}` }]);
      for (const s of opts.dumpAfter)
        if (!STAGES.includes(s)) throw new DehvfError([{ phase: "input", message: `unknown stage "${s}" for --dump-after`, hint: `stages: ${STAGES.join(", ")}` }]);
      const m = loadModel(file, opts.model);
      const sources = m.program.sources;
      const roots = runPipeline(m.outputs, m.graph, (stage, rs) => {
        if (opts.dumpAfter.includes(stage)) process.stdout.write(`# ---- after ${stage} ----\n${printGraph(rs, m.graph.provenance, sources)}\n`);
      });
      if (opts.emit === "graph") process.stdout.write(`${printGraph(roots, m.graph.provenance, sources)}\n`);
      else {
        const h = opHistogram(roots.map((r) => r.node));
        const n = [...h.values()].reduce((a, b) => a + b, 0);
        process.stdout.write(`model ${m.name}: ${n} IR nodes (${m.graph.size} built, shared by hash-consing)\n`);
        process.stdout.write(`${[...h].map(([op, c]) => `  ${op.padEnd(8)} ${c}`).join("\n")}\n`);
      }
    });
}
