import type { Command } from "commander";
import { type CompiledModel, elaborate } from "../../compiler/elaborate.ts";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";

/** Parse, link and elaborate FILE's model; errors surface as DehvfError. */
export function loadModel(file: string, model?: string): CompiledModel {
  return elaborate(loadProgram(file), model);
}

export function intOption(name: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new Error(`--${name} must be an integer, got "${v}"`);
    return n;
  };
}

export interface DimOptions {
  batch: number;
  seq: number;
  dim?: string[];
}

/** --batch, --seq and --dim name=value: the values of a model's run-time dimensions. */
export function dimOptions(cmd: Command): Command {
  return cmd
    .option("--batch <n>", "batch size (B)", intOption("batch"), 2)
    .option("--seq <n>", "text length (T)", intOption("seq"), 8)
    .option("--dim <name=value...>", "value of another run-time dimension symbol");
}

export function resolveDims(m: CompiledModel, opts: DimOptions): Record<string, number> {
  const dims: Record<string, number> = { B: opts.batch, T: opts.seq };
  for (const kv of opts.dim ?? []) {
    const [k, v] = kv.split("=");
    if (!k || !Number.isInteger(Number(v))) throw new DehvfError([{ phase: "input", message: `--dim expects name=integer, got "${kv}"` }]);
    dims[k] = Number(v);
  }
  for (const s of m.symbols)
    if (dims[s] === undefined) throw new DehvfError([{ phase: "input", message: `run-time dimension \`${s}\` of model \`${m.name}\` has no value`, hint: `pass --dim ${s}=<n>` }]);
  return dims;
}
