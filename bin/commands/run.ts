import type { Command } from "commander";
import { shapeStr } from "../../compiler/dims.ts";
import type { CompiledModel } from "../../compiler/elaborate.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import type { Tensor } from "../../compiler/tensor.ts";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { autotuneRequested } from "../../runtime/autotune.ts";
import { acquireGpu, type Gpu } from "../../runtime/device.ts";
import { hostLimits } from "../../runtime/host-limits.ts";
import { checksum, initAllParams, loadAllParams, runInterp, syntheticInputs } from "../../runtime/interp-backend.ts";
import type { WeightStorage } from "../../lowering/plan.ts";
import { deviceLimits, inferenceWeights, runWebgpu, type WebgpuRun } from "../../runtime/webgpu-backend.ts";
import { type DimOptions, dimOptions, loadModel, nonNegativeInt, resolveDims, WEIGHTS_HELP, weightsOption } from "./load.ts";

interface RunOptions extends DimOptions {
  model?: string;
  backend: string;
  seed: number;
  compare?: boolean;
  profile?: boolean;
  autotune?: boolean;
  weights?: WeightStorage;
}

type Say = (line: string) => void;

function sayMaxError(reference: readonly Tensor[], outputs: readonly Tensor[], say: Say): void {
  let err = 0;
  let mag = 0;
  reference.forEach((t, k) =>
    t.data.forEach((x, i) => {
      err = Math.max(err, Math.abs(x - outputs[k].data[i]));
      mag = Math.max(mag, Math.abs(x));
    }),
  );
  say(`max abs error vs interp: ${err.toExponential(3)} (max |x| ${mag.toPrecision(4)})`);
}

function sayProfile(m: CompiledModel, r: WebgpuRun, kernelMs: readonly number[], say: Say): void {
  const rows = kernelMs.map((ms, i) => ({ ms, k: r.plan.kernels[i] })).sort((a, b) => b.ms - a.ms);
  const total = kernelMs.reduce((a, b) => a + b, 0);
  say(`per-kernel GPU time (total ${total.toFixed(2)} ms), slowest first:`);
  for (const { ms, k } of rows.slice(0, Number(process.env.DEHVF_PROFILE_TOP ?? 15))) {
    const where = k.spans
      .map((sp) => {
        const p = m.program.sources.get(sp.file)?.position(sp.start);
        return p ? `${sp.file}:${p.line}:${p.col}` : sp.file;
      })
      .join(" ← ");
    say(
      `  ${ms.toFixed(3).padStart(8)} ms  #${String(k.index).padEnd(4)} ${k.label.padEnd(12)} ${(k.flops / Math.max(ms, 1e-6) / 1e6).toFixed(1).padStart(7)} GFLOP/s  ${(k.path || "model").padEnd(28)} ${where}`,
    );
  }
  // Totals per kernel kind and per top-level instance show where a model spends its time at a glance.
  const totals = (key: (k: (typeof rows)[number]["k"]) => string): string =>
    [...rows.reduce((acc, { ms, k }) => acc.set(key(k), (acc.get(key(k)) ?? 0) + ms), new Map<string, number>())]
      .sort((a, b) => b[1] - a[1])
      .map(([name, ms]) => `${name} ${ms.toFixed(1)} ms`)
      .join(", ");
  say(`by kind: ${totals((k) => k.label.split("+")[0])}`);
  say(`by instance: ${totals((k) => (k.path || "model").split(".")[0])}`);
}

/** Weights from init rules (seeded) or checkpoints, one synthetic batch, through the interpreter and/or `gpu`; prints shapes, checksums and times. */
async function runModel(m: CompiledModel, dims: Record<string, number>, opts: RunOptions, gpu: Gpu | undefined): Promise<void> {
  const t0 = performance.now();
  // the interpreter needs every weight as float64; the GPU path streams checkpoint weights as float32
  const params = !gpu || opts.compare ? await loadAllParams(m, opts.seed) : initAllParams(m, opts.seed);
  const inputs = syntheticInputs(m, opts.seed, dims);
  const t1 = performance.now();
  const say: Say = (line) => process.stdout.write(`${line}\n`);
  const show = (label: string, outs: Tensor[]) =>
    m.outputs.forEach((o, k) => {
      const c = checksum(outs[k]);
      say(`${label} ${o.name.padEnd(12)} [${outs[k].shape.join(", ")}]  sum ${c.sum.toPrecision(12)}  mean|x| ${c.absMean.toPrecision(8)}  hash ${c.hash}`);
    });
  say(`model ${m.name}  seed ${opts.seed}  ${m.symbols.map((s) => `${s}=${dims[s]}`).join(" ")}`);
  for (const i of m.inputs) say(`input  ${i.name.padEnd(12)} ${i.dtype}${shapeStr(i.shape)}`);
  let reference: Tensor[] | undefined;
  if (!gpu || opts.compare) {
    const s = performance.now();
    reference = runInterp(m, params, { seed: opts.seed, dims, inputs });
    show("output", reference);
    say(`interp (float64): init ${(t1 - t0).toFixed(0)} ms, run ${(performance.now() - s).toFixed(0)} ms`);
  }
  if (!gpu) return;
  const r = await runWebgpu(gpu, m, params, inputs, dims, {
    profile: opts.profile,
    autotune: autotuneRequested(opts.autotune) && { log: say },
    weights: inferenceWeights(gpu, m.params, opts.weights, say),
  });
  show("output", r.outputs);
  say(
    `webgpu (${gpu.info.description || gpu.info.vendor}): ${r.plan.kernels.length} kernels, plan+pipelines ${r.compileMs.toFixed(0)} ms, first run ${r.firstRunMs.toFixed(0)} ms, warm run ${r.runMs.toFixed(1)} ms`,
  );
  if (reference) sayMaxError(reference, r.outputs, say);
  if (r.kernelMs) sayProfile(m, r, r.kernelMs, say);
}

export function registerRun(program: Command): void {
  dimOptions(program.command("run"))
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to run (default: the file's first model)")
    .option("--backend <name>", "execution backend: webgpu (generated WGSL on Dawn) or interp (float64 reference interpreter)", "webgpu")
    .option("--compare", "also run the float64 interpreter and report the largest difference")
    .option("--profile", "print per-kernel GPU times (timestamp queries)")
    .option("--autotune", "time candidate matmul kernels on this device first (cached per adapter; also DEHVF_AUTOTUNE=1)")
    .option("--seed <n>", "seed for parameter init and the synthetic batch", nonNegativeInt, 0)
    .option("--weights <f16|f32>", `${WEIGHTS_HELP} (default: f16 for weights from a checkpoint where the adapter has shader-f16, else f32)`, weightsOption)
    .description("load the weights (init rules, seeded; `from` checkpoints), run one synthetic batch and print output shapes and checksums")
    .action(async (file: string, opts: RunOptions) => {
      if (opts.backend !== "interp" && opts.backend !== "webgpu")
        throw new DehvfError([{ phase: "input", message: `unknown backend "${opts.backend}"`, hint: "available: webgpu, interp" }]);
      const m = loadModel(file, opts.model);
      const dims = resolveDims(m, opts);
      // the device's limits take part in the size check, so the GPU comes before any tensor is allocated
      const gpu = opts.backend === "webgpu" ? await acquireGpu() : undefined;
      try {
        checkSizes(m, dims, { host: hostLimits(), interp: !gpu || opts.compare, device: gpu && deviceLimits(gpu) });
        await runModel(m, dims, opts, gpu);
      } finally {
        gpu?.destroy();
      }
    });
}
