import { mkdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { emitModelModule, type GenerationPlans, type PlansAt } from "../../bindings/emit-ts.ts";
import { CONTEXT_DIM } from "../../compiler/decoding.ts";
import type { CompiledModel } from "../../compiler/elaborate.ts";
import { type GenerationModels, generationModels } from "../../compiler/generation-models.ts";
import { withTapOutputs } from "../../compiler/tap-outputs.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { buildPlan, type PlanTarget, WEBGPU_DEFAULT_TARGET, type WeightStorage } from "../../lowering/plan.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { loadAllParams } from "../../runtime/interp-backend.ts";
import { loadTrainedWeights } from "../../train/checkpoint.ts";
import { type DimOptions, loadModel, resolveDims } from "./load.ts";

/** Whether the model generates text: int tokens [B, T] in, logits [B, S, vocab] out. */
const decodes = (m: CompiledModel) => {
  const tokens = m.inputs.find((i) => i.name === "tokens");
  return tokens?.dtype === "i32" && tokens.shape.length === 2 && m.outputs[0]?.node.shape.length === 3;
};

/** A prefill of the forward's whole window (prompts right-padded to it) and a decode step, batch 1. */
function generationPlans(g: GenerationModels, dims: Readonly<Record<string, number>>, target: PlanTarget, weights: WeightStorage): GenerationPlans {
  const T = dims[g.seqDim];
  const at = { [g.batchDim]: 1, [g.seqDim]: T, [CONTEXT_DIM]: T };
  const prefix = g.prefixLength(at);
  const context = T + prefix;
  return {
    prefill: buildPlan(g.prefill, { ...at, [CONTEXT_DIM]: context }, target, undefined, { weights }),
    decode: buildPlan(g.decode, { [g.batchDim]: 1, [CONTEXT_DIM]: context }, target, undefined, { weights }),
    prefillState: g.prefill.state,
    decodeState: g.decode.state,
    prefix,
  };
}

export interface EmitTsOptions {
  readonly model?: string;
  readonly out?: string;
  readonly taps: readonly string[];
  readonly checkpoint?: string;
  readonly dims: DimOptions;
  /** the command line, for the module's header */
  readonly command: string;
}

/**
 * `dehvf compile FILE --emit ts -o DIR`: DIR/<Model>.ts (bindings/emit-ts.ts) and
 * DIR/<Model>.weights.safetensors, every parameter the plans read: the model's own values
 * (checkpoints it names, init rules for the rest) with a trained stage's on top when
 * `--checkpoint` is given. Planned for WebGPU's guaranteed limits and no subgroups, so the
 * module runs on any adapter (a page's SwiftShader as well as a discrete GPU); the f16
 * plan is used only where the adapter has shader-f16.
 */
export async function emitTs(file: string, o: EmitTsOptions): Promise<void> {
  if (!o.out) throw new UserError("--emit ts writes files: pass -o DIR");
  const base = loadModel(file, o.model);
  const { model, taps } = o.taps.length ? withTapOutputs(base, o.taps) : { model: base, taps: [] };
  const dims = resolveDims(model, o.dims);
  checkSizes(model, dims, { device: WEBGPU_DEFAULT_TARGET });
  const plansAt = (weights: WeightStorage): PlansAt => {
    const target = { ...WEBGPU_DEFAULT_TARGET, shaderF16: weights === "f16" };
    return { forward: buildPlan(model, dims, target, undefined, { weights }), generation: generation && generationPlans(generation, dims, target, weights) };
  };
  const generation = decodes(base) ? generationModels(base.program, base.name) : undefined;
  const [f32, f16] = [plansAt("f32"), plansAt("f16")];
  mkdirSync(o.out, { recursive: true });
  const moduleFile = join(o.out, `${model.name}.ts`);
  writeFileSync(moduleFile, emitModelModule({ model, plans: { f32, f16 }, taps, command: o.command }));
  const f32Plan = f32.forward;

  const params = await loadAllParams(model, 0);
  if (o.checkpoint) for (const [k, v] of await loadTrainedWeights(o.checkpoint, model)) params.set(k, v);
  const used = new Set([f32.forward, f32.generation?.prefill, f32.generation?.decode].flatMap((p) => p?.params ?? []).map((p) => p.part?.of ?? p.name));
  const weightsFile = join(o.out, `${model.name}.weights.safetensors`);
  await writeSafetensors(
    weightsFile,
    new Map([...params].filter(([n]) => used.has(n)).map(([n, t]) => [n, { shape: t.shape, data: Float32Array.from(t.data) }])),
    { model: model.name, weights: o.checkpoint ? `trained: ${o.checkpoint}` : "the model's own (its checkpoints, init rules for the rest)" },
  );
  const at = (p: string) => relative(process.cwd(), p) || p;
  process.stdout.write(
    `wrote ${at(moduleFile)} (${f32Plan.kernels.length} kernels${f32.generation ? `, generation ${f32.generation.prefill.kernels.length} + ${f32.generation.decode.kernels.length}` : ""}; f16 plans too) and ${at(weightsFile)} (${used.size} parameters${o.checkpoint ? `, trained ones from ${o.checkpoint}` : ", untrained: pass --checkpoint for a trained stage's"})\n`,
  );
}
