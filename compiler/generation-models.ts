import { DehvfError } from "../grammar/diagnostics.ts";
import type { Program } from "../grammar/modules.ts";
import { CONTEXT_DIM } from "./decoding.ts";
import { type Dim, dimEval } from "./dims.ts";
import { type CompiledModel, elaborate } from "./elaborate.ts";

/**
 * A model elaborated twice for generation (compiler/decoding.ts): prefill (the prompt,
 * and any visual prefix, from position 0) and decode (one token per row). Both name the
 * same parameters and state, so their plans can share the weights and the KV cache.
 */
export interface GenerationModels {
  readonly prefill: CompiledModel;
  readonly decode: CompiledModel;
  /** the run-time dimension names of the `tokens` input: batch and new tokens */
  readonly batchDim: string;
  readonly seqDim: string;
  /** the output's length minus the tokens' (a concat model's visual prefix); 0 for plain LLMs */
  prefixLength(dims: Readonly<Record<string, number>>): number;
}

export function generationModels(program: Program, modelName?: string): GenerationModels {
  const full = elaborate(program, modelName);
  const tokens = full.inputs.find((i) => i.name === "tokens");
  const where = `model \`${full.name}\``;
  const [b, t] = tokens?.shape ?? [];
  const single = (d: Dim | undefined) =>
    d !== undefined && typeof d !== "number" && d.terms.length === 1 && d.terms[0][1] === 1 && d.constant === 0 ? d.terms[0][0] : undefined;
  const [batchDim, seqDim] = [single(b), single(t)];
  if (!tokens || tokens.dtype !== "i32" || tokens.shape.length !== 2 || !batchDim || !seqDim)
    throw new DehvfError([
      { phase: "input", message: `${where} cannot generate text: it needs an input \`tokens: [B, T] int\` (B and T run-time dimensions)` },
    ]);
  const out = full.outputs[0].node;
  if (out.shape.length !== 3)
    throw new DehvfError([
      { phase: "input", message: `${where} cannot generate text: its output should be logits [B, S, vocab], it is rank ${out.shape.length}` },
    ]);
  const prefill = elaborate(program, full.name, { mode: "prefill" });
  const decode = elaborate(program, full.name, { mode: "decode", fixed: { [seqDim]: 1 } });
  if (!prefill.symbols.includes(CONTEXT_DIM))
    throw new DehvfError([
      { phase: "input", message: `${where} keeps no KV cache: its attention does not use \`cached(...)\` (see docs/language.md, "Generation")` },
    ]);
  return {
    prefill,
    decode,
    batchDim,
    seqDim,
    prefixLength: (dims) => dimEval(prefill.outputs[0].node.shape[1], dims) - dims[seqDim],
  };
}
