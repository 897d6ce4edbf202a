import type { Command } from "commander";
import { shapeStr } from "../../compiler/dims.ts";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { checksum, initAllParams, runInterp } from "../../runtime/interp-backend.ts";
import { intOption, loadModel } from "./load.ts";

export function registerRun(program: Command): void {
  program
    .command("run")
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to run (default: the file's first model)")
    .option("--backend <name>", "execution backend: interp (float64 reference interpreter)", "interp")
    .option("--seed <n>", "seed for parameter init and the synthetic batch", intOption("seed"), 0)
    .option("--batch <n>", "batch size (B)", intOption("batch"), 2)
    .option("--seq <n>", "text length (T)", intOption("seq"), 8)
    .option("--dim <name=value...>", "value of another run-time dimension symbol")
    .description("random-init the weights, run one synthetic batch and print output shapes and checksums")
    .action((file: string, opts: { model?: string; backend: string; seed: number; batch: number; seq: number; dim?: string[] }) => {
      if (opts.backend !== "interp") throw new DehvfError([{ phase: "input", message: `unknown backend "${opts.backend}"`, hint: "available: interp (the WebGPU backend is not built yet)" }]);
      const m = loadModel(file, opts.model);
      const dims: Record<string, number> = { B: opts.batch, T: opts.seq };
      for (const kv of opts.dim ?? []) {
        const [k, v] = kv.split("=");
        if (!k || !Number.isInteger(Number(v))) throw new DehvfError([{ phase: "input", message: `--dim expects name=integer, got "${kv}"` }]);
        dims[k] = Number(v);
      }
      for (const s of m.symbols)
        if (dims[s] === undefined) throw new DehvfError([{ phase: "input", message: `run-time dimension \`${s}\` has no value`, hint: `pass --dim ${s}=<n>` }]);
      const t0 = performance.now();
      const params = initAllParams(m, opts.seed);
      const t1 = performance.now();
      const outs = runInterp(m, params, { seed: opts.seed, dims });
      const t2 = performance.now();
      process.stdout.write(`model ${m.name}  backend interp (float64)  seed ${opts.seed}  ${m.symbols.map((s) => `${s}=${dims[s]}`).join(" ")}\n`);
      for (const i of m.inputs) process.stdout.write(`input  ${i.name.padEnd(12)} ${i.dtype}${shapeStr(i.shape)}\n`);
      m.outputs.forEach((o, k) => {
        const t = outs[k];
        const c = checksum(t);
        process.stdout.write(`output ${o.name.padEnd(12)} [${t.shape.join(", ")}]  sum ${c.sum.toPrecision(12)}  mean|x| ${c.absMean.toPrecision(8)}  hash ${c.hash}\n`);
      });
      process.stdout.write(`init ${(t1 - t0).toFixed(0)} ms, run ${(t2 - t1).toFixed(0)} ms\n`);
    });
}
