import { type Command, InvalidArgumentError } from "commander";
import { type CompiledModel, elaborate } from "../../compiler/elaborate.ts";
import type { WeightStorage } from "../../lowering/plan.ts";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";

/** Parse, link and elaborate FILE's model; errors surface as DehvfError. */
export function loadModel(file: string, model?: string, options: { training?: boolean } = {}): CompiledModel {
  return elaborate(loadProgram(file), model, options);
}

/**
 * `v` as a whole number of at least `min` in plain decimal digits, else undefined: "1e3",
 * "0x10", "" and " 3" are typos more often than numbers, so they are not read as 1000, 16, 0 or 3.
 */
function wholeNumber(v: string, min: number): number | undefined {
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= min ? n : undefined;
}

/**
 * An option parser for whole numbers of at least `min`. Commander prints a refusal as
 * `error: option '--steps <n>' argument 'abc' is invalid. Expected …` and exits 1.
 */
function wholeNumberOption(min: number): (v: string) => number {
  return (v: string) => {
    const n = wholeNumber(v, min);
    if (n === undefined) throw new InvalidArgumentError(`Expected a whole number${min > 0 ? ` of at least ${min}` : " (0 or more)"}.`);
    return n;
  };
}

export const positiveInt = wholeNumberOption(1);
export const nonNegativeInt = wholeNumberOption(0);

/** An option parser for a plain decimal number in [min, max] ("0.8", "1", "1e-3"; not "", "0x1" or "Infinity"). */
export function numberOption(min: number, max = Infinity): (v: string) => number {
  return (v: string) => {
    const n = /^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v) ? Number(v) : NaN;
    if (!(n >= min && n <= max)) throw new InvalidArgumentError(`Expected a number${max === Infinity ? ` of at least ${min}` : ` from ${min} to ${max}`}.`);
    return n;
  };
}

/** `--weights f16|f32`: how frozen weights are stored on the device (lowering/plan.ts PlanOptions.weights). */
export function weightsOption(v: string): WeightStorage {
  if (v !== "f16" && v !== "f32") throw new InvalidArgumentError("Expected f16 or f32.");
  return v;
}

export const WEIGHTS_HELP = "store frozen weights as f16 or f32 on the device (f16 needs shader-f16; math stays f32)";

/** `--dim name=n` (repeatable, variadic): the values of run-time dimension symbols, collected by name. */
export function dimAssignment(v: string, acc: Readonly<Record<string, number>> = {}): Record<string, number> {
  const m = /^([A-Za-z_]\w*)=(.*)$/.exec(v);
  if (!m) throw new InvalidArgumentError("Expected name=value, e.g. T=16.");
  const n = wholeNumber(m[2], 1);
  if (n === undefined) throw new InvalidArgumentError(`The value of ${m[1]} must be a whole number of at least 1.`);
  return { ...acc, [m[1]]: n };
}

export interface DimOptions {
  batch: number;
  seq: number;
  dim?: Readonly<Record<string, number>>;
}

/** --batch, --seq and --dim name=value: the values of a model's run-time dimensions. */
export function dimOptions(cmd: Command): Command {
  return cmd
    .option("--batch <n>", "batch size (B)", positiveInt, 2)
    .option("--seq <n>", "text length (T)", positiveInt, 8)
    .option("--dim <name=value...>", "value of another run-time dimension symbol", dimAssignment);
}

export function resolveDims(m: CompiledModel, opts: DimOptions): Record<string, number> {
  const dims: Record<string, number> = { B: opts.batch, T: opts.seq, ...opts.dim };
  for (const s of m.symbols)
    if (dims[s] === undefined)
      throw new DehvfError([{ phase: "input", message: `run-time dimension \`${s}\` of model \`${m.name}\` has no value`, hint: `pass --dim ${s}=<n>` }]);
  return dims;
}
