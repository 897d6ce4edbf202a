import { type CompiledModel, elaborate } from "../../compiler/elaborate.ts";
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
