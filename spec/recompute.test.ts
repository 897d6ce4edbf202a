/**
 * Recomputing layers in the backward (compiler/recompute.ts): the step computes the same
 * values as the one that keeps its activations (bit for bit in the float64 interpreter,
 * dropout included), on the device within the usual tolerance; each block is recomputed
 * right before its own backward, so a plan keeps less; the paper-size training step fits
 * in 20 GB with f16 weights.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import { interpret } from "../compiler/interpret.ts";
import { planMemory } from "../compiler/memory-plan.ts";
import { memoryReport } from "../lowering/memory-report.ts";
import { runPipeline } from "../compiler/pipeline.ts";
import { buildPlan, type Plan, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";
import { layerOf } from "../compiler/recompute.ts";
import { matmulOf, schedule } from "../compiler/schedule.ts";
import { numel, type Tensor, tensor } from "../compiler/tensor.ts";
import { buildTrainGraph, stepInputs, type TrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { initAllParams, syntheticInputs } from "../runtime/interp-backend.ts";
import { fcRuns } from "./fc-runs.ts";
import { useGpu } from "./gpu-check.ts";
import { checkTrainStep } from "./train-check.ts";

const gpu = useGpu();
const MICRO = "spec/fixtures/train/micro.dehvf";
const work = mkdtempSync(join(tmpdir(), "dehvf-recompute-"));
after(() => rmSync(work, { recursive: true, force: true }));

/** The outputs of one training step (loss, norms, every updated tensor) in the interpreter. */
function stepValues(graph: TrainGraph, model: CompiledModel, dims: Readonly<Record<string, number>>, seed: number): Tensor[] {
  const params = initAllParams(model, seed);
  for (const p of graph.trained) for (const s of [p.m, p.v]) params.set(s, tensor(p.shape));
  const inputs = syntheticInputs(graph.model, seed, dims);
  inputs.set(
    "loss_mask",
    tensor(
      [dims.B, dims.T],
      Array.from({ length: dims.B * dims.T }, (_, i) => (i % dims.T >= 1 ? 1 : 0)),
    ),
  );
  for (const [k, v] of Object.entries(stepInputs(graph, 1, 1e-2, seed))) inputs.set(k, tensor([], [v]));
  return interpret(
    graph.model.outputs.map((o) => o.node),
    { dims, inputs, params },
  );
}

/** Both steps of `file`'s model `name` (elaborated for training: dropout on) with the same values, bit for bit; returns the recomputing one. */
function assertSameStep(file: string, name: string | undefined, dims: Readonly<Record<string, number>>, seed: number): TrainGraph {
  const kept = buildTrainGraph(elaborate(loadProgram(file), name, { training: true }));
  const recomputed = buildTrainGraph(elaborate(loadProgram(file), name, { training: true }), undefined, { recompute: true });
  assert.ok(
    topoOrder(recomputed.model.outputs.map((o) => o.node)).some((n) => n.op === "barrier"),
    `${name}: nothing recomputed`,
  );
  const [a, b] = [stepValues(kept, kept.model, dims, seed), stepValues(recomputed, recomputed.model, dims, seed)];
  kept.model.outputs.forEach((o, i) => assert.deepEqual([...b[i].data], [...a[i].data], `${name} ${o.name}`));
  return recomputed;
}

describe("the recomputing step computes what the kept one does", () => {
  test("micro tiny-vqa's three fusions with dropout, in float64: every output bit for bit", () => {
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) assertSameStep(MICRO, name, { B: 2, T: 6 }, 3);
  });

  test("random layer stacks (DEHVF over a frozen LLaMA, or the LM trained whole), in float64", () => {
    let files = 0;
    fc.assert(
      fc.property(
        fc.record({
          llm: fc.integer({ min: 1, max: 3 }),
          vit: fc.integer({ min: 1, max: 2 }),
          heads: fc.integer({ min: 1, max: 2 }),
          headDim: fc.constantFrom(2, 4),
          ffn: fc.integer({ min: 3, max: 9 }),
          dropout: fc.constantFrom(0, 0.25),
          fusion: fc.boolean(),
          B: fc.integer({ min: 1, max: 2 }),
          T: fc.integer({ min: 2, max: 5 }),
          seed: fc.integer({ min: 0, max: 1000 }),
        }),
        (c) => {
          const d = c.heads * c.headDim;
          const language = `language = Llama(vocab: 16, d: ${d}, layers: ${c.llm}, heads: ${c.heads}, ffn: ${c.ffn})`;
          const body = c.fusion
            ? `model M {
  vision   = ViT(image: 8, patch: 4, d: 4, layers: ${c.vit}, heads: 1, mlp: 6, channels: 1) frozen
  ${language} frozen
  fusion dehvf = DEHVF(vision_layers: vision.layers, d_vision: vision.d, d: language.d, targets: language.layers,
                       t: 2, router_hidden: 3, proj_hidden: 3, slots: 5, dropout: ${c.dropout}) {
    target   language.layer[*].memory
    features vision.layer[*].out
    hidden   language.layer[l].ffn_in
    mask     prompt_mask
  }
  forward(image: [B, 1, 8, 8], tokens: [B, T] int, prompt_mask: [B, T]) -> [B, T, 16] {
    vision(image)
    return language(tokens)
  }
}`
            : `model M {
  ${language}
  forward(tokens: [B, T] int) -> [B, T, 16] = language(tokens)
}`;
          const file = join(work, `m${files++}.dehvf`);
          writeFileSync(file, `import "std/vit.dehvf"\nimport "std/llama.dehvf"\nimport "std/fusion.dehvf"\n${body}`);
          assertSameStep(file, "M", { B: c.B, T: c.T }, c.seed);
        },
      ),
      fcRuns(25),
    );
  });
});

/** Kernel index of each pooled tensor's write and last read, and the peak of live bytes. */
function livePeak(plan: ReturnType<typeof schedule>, pooled: (n: import("../compiler/ir.ts").Node) => boolean): number {
  const live = new Float64Array(plan.kernels.length);
  const last = new Map<import("../compiler/ir.ts").Node, number>();
  plan.kernels.forEach((k, i) => k.inputs.forEach((n) => last.set(n, i)));
  plan.kernels.forEach((k, i) => {
    for (const n of [k.output, ...(k.also ?? [])]) {
      if (!pooled(n)) continue;
      for (let j = i; j <= (last.get(n) ?? i); j++) live[j] += numel(plan.shapes.get(n)!) * 4;
    }
  });
  return Math.max(...live);
}

describe("plans that recompute keep less", () => {
  const LM = join(work, "lm4.dehvf");
  // a frozen LM with a trained gate in every layer's FFN memory site (PEFT): the gradient crosses every layer
  writeFileSync(
    LM,
    `import "std/llama.dehvf"
block Gate(d: int) {
  param g: [d] init zeros
  forward(x: [B, T, d]) -> [B, T, d] = x * g
}
model LM4 {
  language = Llama(vocab: 64, d: 32, layers: 4, heads: 2, ffn: 88) frozen
  fusion gate = Gate(d: language.d) each {
    target language.layer[*].memory
  }
  forward(tokens: [B, T] int) -> [B, T, 64] = language(tokens)
}
`,
  );
  const dims = { B: 2, T: 32 };

  test("a 4-layer LM: each layer recomputed after the backward of the layers above it, less live memory", () => {
    const peaks = [false, true].map((recompute) => {
      const step = buildTrainGraph(elaborate(loadProgram(LM), undefined, { training: true }), undefined, { recompute });
      const roots = runPipeline(step.model.outputs, step.model.graph);
      const s = schedule(roots, dims, { maxBindings: 8 });
      const memory = planMemory(
        s,
        roots.map((r) => r.node),
      );
      if (recompute) {
        // the first kernel that recomputes layer l runs after the last that recomputes l + 1
        const path = (i: number) => step.model.graph.instancePath.get((matmulOf(s.kernels[i])?.node ?? s.kernels[i].output).id) ?? "";
        const at = new Map<string, number[]>();
        s.kernels.forEach((_, i) => {
          const p = path(i);
          if (p.endsWith("⟳")) at.set(layerOf(p)!, [...(at.get(layerOf(p)!) ?? []), i]);
        });
        assert.deepEqual(
          [...at.keys()].sort(),
          [0, 1, 2, 3].map((l) => `language.layer.${l}`),
        );
        for (const l of [0, 1, 2])
          assert.ok(
            Math.min(...at.get(`language.layer.${l}`)!) > Math.max(...at.get(`language.layer.${l + 1}`)!),
            `layer ${l} recomputed before layer ${l + 1} is done`,
          );
      }
      return { live: livePeak(s, (n) => memory.slotOf.get(n)?.role === "pooled"), pooled: memory.pooledBytes };
    });
    assert.ok(peaks[1].live < 0.6 * peaks[0].live, `live peak ${peaks[1].live} B recomputing vs ${peaks[0].live} B keeping`);
    assert.ok(peaks[1].pooled < peaks[0].pooled, `pooled ${peaks[1].pooled} B recomputing vs ${peaks[0].pooled} B keeping`);
  });

  test("the 7B DEHVF training step at B=4, T=512 with f16 weights fits in 20 GB", () => {
    const step = buildTrainGraph(elaborate(loadProgram("models/clip-l14-llama7b-dehvf.dehvf"), undefined, { training: true }), undefined, { recompute: true });
    const target = { ...WEBGPU_DEFAULT_TARGET, maxBindingBytes: 2 ** 40, maxBufferBytes: 2 ** 40, shaderF16: true };
    const plan: Plan = buildPlan(step.model, { B: 4, T: 512 }, target, undefined, { weights: "f16", mutableParams: new Set(step.updates.map((u) => u.to)) });
    const r = memoryReport(plan, step.model);
    assert.ok(r.deviceBytes <= 20e9, `${(r.deviceBytes / 1e9).toFixed(2)} GB: ${r.device.map((c) => `${c.name} ${(c.bytes / 1e9).toFixed(2)}`).join(", ")}`);
  });
});

describe("recomputing steps on WebGPU", () => {
  test("micro tiny-vqa's three fusions with dropout: one step equals the interpreter's", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
      await checkTrainStep(g, elaborate(loadProgram(MICRO), name, { training: true }), { B: 2, T: 6 }, undefined, undefined, { recompute: true });
  });
});

test("`dehvf compile --recompute` needs --train (exit 1)", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", "bin/dehvf.ts", "compile", MICRO, "--recompute"], { encoding: "utf8" });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /--recompute applies to the training step: add --train/);
});
