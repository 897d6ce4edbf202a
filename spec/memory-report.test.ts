/**
 * The plan's memory by category (`dehvf compile --emit plan`, with `--train` for a training
 * step): every byte counted once, in the category a user would shrink, and every shipped
 * model planned within WebGPU's default 8 storage bindings per kernel.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CONTEXT_DIM } from "../compiler/decoding.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { memoryReport } from "../lowering/memory-report.ts";
import { buildPlan, type PlanTarget, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";
import { numel } from "../compiler/tensor.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";

/** WebGPU's guaranteed limits (what `dehvf compile` plans for without an adapter), binding sizes aside. */
const DEFAULTS: PlanTarget = { ...WEBGPU_DEFAULT_TARGET, maxBindingBytes: 2 ** 40, maxBufferBytes: 2 ** 40 };
const bytesOf = (r: ReturnType<typeof memoryReport>, prefix: string) => r.device.filter((c) => c.name.startsWith(prefix)).reduce((a, c) => a + c.bytes, 0);

describe("memory report", () => {
  const program = loadProgram("models/tiny-vqa.dehvf");

  test("a training step: weights by whether they train, AdamW's two moments, the step's outputs, the pooled peak", () => {
    const step = buildTrainGraph(elaborate(program, "TinyVQA", { training: true }));
    const plan = buildPlan(step.model, { B: 2, T: 48 }, DEFAULTS, undefined, { mutableParams: new Set(step.updates.map((u) => u.to)) });
    const r = memoryReport(plan, step.model);
    // the parameters the step reads (a frozen one off every path to the loss is not planned)
    const planned = new Set(plan.params.map((p) => p.name));
    const used = step.model.params.filter((p) => planned.has(p.name));
    const trainable = used.filter((p) => p.trainable).reduce((a, p) => a + numel(p.shape), 0);
    const frozen = used.filter((p) => !p.trainable).reduce((a, p) => a + numel(p.shape), 0);
    assert.equal(trainable, 44_448);
    assert.equal(bytesOf(r, "trainable parameters"), 4 * trainable);
    assert.equal(bytesOf(r, "optimizer state"), 2 * 4 * trainable);
    assert.equal(bytesOf(r, "frozen weights (f32)"), 4 * frozen);
    assert.equal(bytesOf(r, "updated parameters"), 3 * 4 * trainable, "new weights, m and v");
    assert.equal(bytesOf(r, "intermediates"), plan.memory.pooledBytes);
    assert.equal(
      r.deviceBytes,
      r.device.reduce((a, c) => a + c.bytes, 0),
    );
    assert.equal(
      r.deviceBytes - bytesOf(r, "intermediates") - bytesOf(r, "textures"),
      plan.memory.residentBytes,
      "resident = parameters + inputs + outputs, each once",
    );
    // nothing here comes from a checkpoint: every parameter is initialised on the host in float64
    assert.deepEqual(
      r.host.map((c) => [c.name, c.bytes]),
      [["parameters initialised here (float64)", 8 * (trainable + frozen)]],
    );
  });

  test("a decode plan: the KV cache and kept values as decode state", () => {
    const { decode } = generationModels(program, "TinyVQA");
    const dims = { B: 2, [CONTEXT_DIM]: 64 };
    const plan = buildPlan(decode, dims, DEFAULTS);
    const r = memoryReport(plan, decode);
    const state = new Set(decode.state.map((s) => s.input));
    const expected = plan.inputs.filter((i) => state.has(i.name)).reduce((a, i) => a + Math.max(4, 4 * numel(i.shape)), 0);
    assert.ok(expected > 0);
    assert.equal(bytesOf(r, "decode state (KV cache"), expected);
    // the FFN memory was computed once from the image at prefill: decoding reads what was kept, not the fusion
    assert.equal(bytesOf(r, "trainable parameters") + bytesOf(r, "optimizer state"), 0);
    // each step writes one slot of every KV cache in its own buffer: no second copy of the caches
    assert.equal(bytesOf(r, "decode state updates"), 0);
    assert.equal(bytesOf(r, "updated parameters"), 0);
    assert.equal(r.deviceBytes - bytesOf(r, "intermediates"), plan.memory.residentBytes);
    // planned without in-place kernels, the caches are rewritten whole into outputs copied
    // back after the step; values kept from prefill (`once`) are only read either way
    const copying = memoryReport(buildPlan(decode, dims, { ...DEFAULTS, inPlace: false }), decode);
    const updated = new Set(decode.state.filter((s) => s.update).map((s) => s.input));
    const rewritten = plan.inputs.filter((i) => updated.has(i.name)).reduce((a, i) => a + Math.max(4, 4 * numel(i.shape)), 0);
    assert.ok(rewritten > 0 && rewritten < expected);
    assert.equal(bytesOf(copying, "decode state updates"), rewritten);
  });

  // the 7B training steps also keep planning linear in the layers (32 layers took > 15 min before)
  for (const [file, models] of [
    ["models/tiny-vqa.dehvf", ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat", "TinyViTClassifier", "TinyLM"]],
    ["models/clip-l14-llama7b-dehvf.dehvf", ["ClipL14Llama7bDEHVF"]],
    ["models/clip-l14-llama7b-memvp.dehvf", [undefined]],
  ] as const)
    for (const name of models)
      test(`${file}${name ? ` ${name}` : ""}: every kernel of the forward and the training step binds at most 8 storage buffers`, () => {
        const p = loadProgram(file);
        const forward = elaborate(p, name);
        const plans = [buildPlan(forward, { B: 1, T: 16 }, DEFAULTS)];
        {
          const step = buildTrainGraph(elaborate(p, name, { training: true }));
          plans.push(buildPlan(step.model, { B: 2, T: 16 }, DEFAULTS, undefined, { mutableParams: new Set(step.updates.map((u) => u.to)) }));
        }
        for (const plan of plans) {
          const over = plan.kernels.filter((k) => k.bindings.filter((b) => b.texture === undefined).length > 8);
          assert.deepEqual(
            over.map((k) => `#${k.index} ${k.label}: ${k.bindings.length}`),
            [],
          );
        }
      });
});
