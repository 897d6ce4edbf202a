/**
 * Frozen weights stored as f16 (PlanOptions.weights = "f16"): the host's binary16
 * conversion, which parameters a plan stores at half precision and what that saves, and
 * the f16 kernels against the float64 interpreter given the same weights rounded to f16
 * (so the comparison is the kernels', at f32's tolerance), with the error against the
 * unrounded weights reported: the accuracy cost of f16 storage itself.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CONTEXT_DIM } from "../compiler/decoding.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { memoryReport } from "../lowering/memory-report.ts";
import { buildPlan, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";
import { type Tensor, numel } from "../compiler/tensor.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { UserError } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";
import { DeviceDecoder, InterpDecoder } from "../runtime/decoder.ts";
import { roundedToHalf, toHalf } from "../runtime/half.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { runWebgpu } from "../runtime/webgpu-backend.ts";
import { compare, F32_TOL, useGpu } from "./gpu-check.ts";

const gpu = useGpu();
const TINY = "models/tiny-vqa.dehvf";
const MICRO = "spec/fixtures/train/micro.dehvf";
const F16_TARGET = { ...WEBGPU_DEFAULT_TARGET, shaderF16: true };
const maxDiff = (a: Tensor, b: Tensor) => a.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.data[i])), 0);

// (the f16 conversion itself is tested exhaustively in spec/io.test.ts)
describe("f16 weights on the host", () => {
  test("a weight beyond f16's range is refused with its name, not made infinite", () => {
    assert.throws(
      () => toHalf([1, -70000], "language.embed"),
      (e: unknown) => e instanceof UserError && /`language.embed` holds -70000 at element 1, beyond f16's range .*--weights f32/.test(e.message),
    );
    assert.deepEqual([...toHalf([Infinity, 65519], "w")], [0x7c00, 0x7bff]);
  });
});

describe("which weights a plan stores as f16", () => {
  test("the frozen ones, in every kind of plan; trained parameters and AdamW's state stay f32", () => {
    const p = loadProgram(TINY);
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
      const m = elaborate(p, name);
      const trainable = new Set(m.params.filter((x) => x.trainable).map((x) => x.name));
      const step = buildTrainGraph(elaborate(p, name, { training: true }));
      const { decode } = generationModels(p, name);
      const plans = [
        buildPlan(m, { B: 2, T: 8 }, F16_TARGET, undefined, { weights: "f16" }),
        buildPlan(step.model, { B: 2, T: 8 }, F16_TARGET, undefined, { weights: "f16", mutableParams: new Set(step.updates.map((u) => u.to)) }),
        buildPlan(decode, { B: 2, [CONTEXT_DIM]: 32 }, F16_TARGET, undefined, { weights: "f16" }),
      ];
      for (const plan of plans) {
        const half = plan.params.filter((x) => x.dtype === "f16");
        assert.ok(half.length > 0, `${name}: no f16 weight`);
        for (const x of plan.params) if (trainable.has(x.name) || x.name.includes("@")) assert.equal(x.dtype, "f32", `${name}: ${x.name}`);
        // 2 bytes an element (whole words): the memory report counts them by dtype
        for (const x of half) assert.equal(plan.memory.slots[x.slot].size, Math.max(4, Math.ceil((numel(x.shape) * 2) / 4) * 4), x.name);
        const r = memoryReport(plan, plan === plans[1] ? step.model : plan === plans[2] ? decode : m);
        assert.equal(
          r.device.find((c) => c.name === "frozen weights (f16)")!.bytes,
          half.reduce((a, x) => a + plan.memory.slots[x.slot].size, 0),
        );
      }
      // f32 by default, and f16 only where the device can read it
      assert.ok(buildPlan(m, { B: 2, T: 8 }, F16_TARGET).params.every((x) => x.dtype === "f32"));
      assert.throws(() => buildPlan(m, { B: 2, T: 8 }, WEBGPU_DEFAULT_TARGET, undefined, { weights: "f16" }), /shader-f16/);
    }
  });

  test("the frozen weights of the 7B DEHVF forward take half the memory", () => {
    const m = elaborate(loadProgram("models/clip-l14-llama7b-dehvf.dehvf"));
    const big = { ...F16_TARGET, maxBindingBytes: 2 ** 40, maxBufferBytes: 2 ** 40 };
    const frozen = (weights: "f16" | "f32") =>
      memoryReport(buildPlan(m, { B: 1, T: 8 }, big, undefined, { weights }), m)
        .device.filter((c) => c.name.startsWith("frozen weights"))
        .reduce((a, c) => a + c.bytes, 0);
    const [f32, f16] = [frozen("f32"), frozen("f16")];
    assert.ok(f16 < 0.501 * f32 && f16 > 0.499 * f32, `f16 ${f16} B vs f32 ${f32} B`);
  });
});

describe("f16 kernels on WebGPU", () => {
  test("tiny-vqa forwards equal the interpreter on f16-rounded weights; the cost of f16 itself is reported", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    if (!g.hasF16) return t.skip("this adapter has no shader-f16");
    const p = loadProgram(TINY);
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
      const m = elaborate(p, name);
      const dims = { B: 2, T: 6 };
      const params = initAllParams(m, 0);
      const inputs = syntheticInputs(m, 0, dims);
      const r = await runWebgpu(g, m, params, inputs, dims, { weights: "f16" });
      const half = new Set(r.plan.params.filter((x) => x.dtype === "f16").map((x) => x.name));
      const rounded = new Map([...params].map(([k, v]) => [k, half.has(k) ? roundedToHalf(v) : v]));
      const [want] = runInterp(m, rounded, { seed: 0, dims, inputs });
      compare(r.outputs[0], want, F32_TOL, `${name} with f16 weights`, r.plan);
      const [exact] = runInterp(m, params, { seed: 0, dims, inputs });
      t.diagnostic(
        `${name}: ${half.size} of ${r.plan.params.length} weights f16; max |f16 device − float64 on the unrounded weights| = ${maxDiff(r.outputs[0], exact).toExponential(2)} (outputs up to ${Math.max(...exact.data.map(Math.abs)).toFixed(2)})`,
      );
    }
  });

  test("prefill and decode steps with f16 weights equal the interpreter's on the rounded weights", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    if (!g.hasF16) return t.skip("this adapter has no shader-f16");
    const p = loadProgram(MICRO);
    for (const name of ["TinyLM", "TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
      const models = generationModels(p, name);
      const full = elaborate(p, name);
      const params = initAllParams(full, 3);
      const frozen = new Set(full.params.filter((x) => !x.trainable).map((x) => x.name));
      const rounded = new Map([...params].map(([k, v]) => [k, frozen.has(k) ? roundedToHalf(v) : v]));
      const inputs = syntheticInputs(full, 5, { B: 2, T: 4 });
      const a = new InterpDecoder(models, rounded, { batch: 2, context: 32 });
      const d = await DeviceDecoder.create(g, models, params, { batch: 2, context: 32, weights: "f16" });
      try {
        let err = maxDiff(await a.prefill(inputs, 4), await d.prefill(inputs, 4));
        const span = a.promptSpan(4);
        for (let s = 0; s < 4; s++) {
          const tok = Int32Array.from({ length: 2 }, (_, b) => (5 * s + 2 * b + 1) % 100);
          const pos = Int32Array.from({ length: 2 }, (_, b) => span + s - b);
          err = Math.max(err, maxDiff(await a.decode(tok, pos), await d.decode(tok, pos)));
        }
        assert.ok(err < 1e-5, `${name}: max |device − interp| = ${err}`);
      } finally {
        d.destroy();
      }
    }
  });
});
