import { mkdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { emitModelModule } from "../../bindings/emit-ts.ts";
import { withTapOutputs } from "../../compiler/tap-outputs.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { buildPlan, WEBGPU_DEFAULT_TARGET } from "../../lowering/plan.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { loadAllParams } from "../../runtime/interp-backend.ts";
import { loadTrainedWeights } from "../../train/checkpoint.ts";
import { type DimOptions, loadModel, resolveDims } from "./load.ts";

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
  const f32 = buildPlan(model, dims, WEBGPU_DEFAULT_TARGET);
  const f16 = buildPlan(model, dims, { ...WEBGPU_DEFAULT_TARGET, shaderF16: true }, undefined, { weights: "f16" });
  mkdirSync(o.out, { recursive: true });
  const moduleFile = join(o.out, `${model.name}.ts`);
  writeFileSync(moduleFile, emitModelModule({ model, plans: { f32, f16 }, taps, command: o.command }));

  const params = await loadAllParams(model, 0);
  if (o.checkpoint) for (const [k, v] of await loadTrainedWeights(o.checkpoint, model)) params.set(k, v);
  const used = new Set(f32.params.map((p) => p.part?.of ?? p.name));
  const weightsFile = join(o.out, `${model.name}.weights.safetensors`);
  await writeSafetensors(
    weightsFile,
    new Map([...params].filter(([n]) => used.has(n)).map(([n, t]) => [n, { shape: t.shape, data: Float32Array.from(t.data) }])),
    { model: model.name, weights: o.checkpoint ? `trained: ${o.checkpoint}` : "the model's own (its checkpoints, init rules for the rest)" },
  );
  const at = (p: string) => relative(process.cwd(), p) || p;
  process.stdout.write(
    `wrote ${at(moduleFile)} (${f32.kernels.length} kernels; f16 plan: ${f16.kernels.length}) and ${at(weightsFile)} (${used.size} parameters${o.checkpoint ? `, trained ones from ${o.checkpoint}` : ", untrained: pass --checkpoint for a trained stage's"})\n`,
  );
}
