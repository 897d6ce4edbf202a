/**
 * Frozen weights larger than one storage binding, split into row blocks
 * (compiler/passes/split-params.ts): the rewrite keeps the values (fast-check, float64),
 * the paper-size plans build under lavapipe's 128 MiB and WebGPU's 8 bindings, and on the
 * device, with the binding limit lowered (DEHVF_MAX_BINDING_BYTES) so small weights split,
 * forwards, decode steps and training steps equal the interpreter on the unsplit model.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { CONTEXT_DIM } from "../compiler/decoding.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { GraphBuilder, topoOrder } from "../compiler/graph.ts";
import { interpret } from "../compiler/interpret.ts";
import type { Node } from "../compiler/ir.ts";
import { splitLargeParams } from "../compiler/passes/split-params.ts";
import { rng } from "../util/rng.ts";
import { buildPlan, type Plan, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { TensorOps } from "../compiler/tensor-ops.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { DeviceDecoder, InterpDecoder } from "../runtime/decoder.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { planTarget, runWebgpu } from "../runtime/webgpu-backend.ts";
import { fcRuns } from "./fc-runs.ts";
import { compare, useGpu } from "./gpu-check.ts";
import { checkTrainStep } from "./train-check.ts";

const gpu = useGpu();
const SPLIT_LM = "spec/fixtures/split-lm.dehvf";
const MiB = 2 ** 20;
const LAVAPIPE_LIMITS = { ...WEBGPU_DEFAULT_TARGET, shaderF16: true, maxBindingBytes: 128 * MiB, maxBufferBytes: 2 ** 31 };

/** Values for the blocks a split made: each its rows of the original's value. */
function blockValues(parts: ReadonlyMap<string, { of: string; start: number; end: number }>, values: ReadonlyMap<string, Tensor>): Map<string, Tensor> {
  const out = new Map(values);
  for (const [name, p] of parts) {
    const v = values.get(p.of)!;
    const row = v.data.length / v.shape[0];
    out.set(name, { shape: [p.end - p.start, ...v.shape.slice(1)], data: v.data.slice(p.start * row, p.end * row) });
  }
  return out;
}

const maxDiff = (a: Tensor, b: Tensor) => a.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.data[i])), 0);

describe("the split rewrite", () => {
  test("gathers, x·wᵀ (split along N) and x·w (split along K, the operand sliced through elementwise ops) keep their values; only frozen weights split", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 40 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        (rows, cols, pieces, seed) => {
          const g = new GraphBuilder();
          const t = new TensorOps(g);
          const w = g.make("param", [], { name: "w", shape: [rows, cols], init: { kind: "zeros" }, trainable: false });
          const trained = g.make("param", [], { name: "v", shape: [rows, cols], init: { kind: "zeros" }, trainable: true });
          const x = g.make("input", [], { name: "x", shape: [3, cols], dtype: "f32" });
          const y = g.make("input", [], { name: "y", shape: [2, 3, rows], dtype: "f32" });
          const ids = g.make("input", [], { name: "ids", shape: [4], dtype: "i32" });
          // y's tanh: an intermediate read only in K blocks, computed block by block when it is past the limit too
          const outs: Node[] = [
            t.gather(w, ids),
            t.matmul(x, t.transposeLast(w)),
            t.matmul(y, t.reshape(w, [1, rows, cols])),
            t.matmul(x, t.transposeLast(trained)),
            t.matmul(t.mul(t.unary("tanh", y), t.scalar(2)), w),
          ];
          // a limit that leaves `pieces` blocks or so
          const maxBytes = Math.max(4 * cols, Math.ceil((rows * cols * 4) / pieces));
          const { roots, parts } = splitLargeParams(
            outs.map((node, i) => ({ name: `o${i}`, node })),
            g,
            { maxBytes, elementBytes: () => 4 },
          );
          if (6 * rows * 4 > maxBytes && parts.size > 1) {
            // tanh(y)·2 is past the limit: the tanh is taken per block of y, never over all of it
            const tanhs = topoOrder([roots[4].node]).filter((n) => n.op === "tanh");
            assert.ok(tanhs.length > 1 && tanhs.every((n) => n.shape[2] !== rows), tanhs.map((n) => `[${n.shape}]`).join(" "));
          }
          assert.ok([...parts.values()].every((p) => p.of === "w" && (p.end - p.start) * cols * 4 <= maxBytes));
          const r = rng(seed);
          const fill = (shape: number[]) =>
            tensor(
              shape,
              Array.from({ length: shape.reduce((a, d) => a * d, 1) }, () => r() * 2 - 1),
            );
          const params = new Map([
            ["w", fill([rows, cols])],
            ["v", fill([rows, cols])],
          ]);
          const inputs = new Map([
            ["x", fill([3, cols])],
            ["y", fill([2, 3, rows])],
            [
              "ids",
              tensor(
                [4],
                Array.from({ length: 4 }, () => Math.floor(r() * rows)),
              ),
            ],
          ]);
          const want = interpret(outs, { dims: {}, inputs, params });
          const got = interpret(
            roots.map((x) => x.node),
            { dims: {}, inputs, params: blockValues(parts, params) },
          );
          // the K split sums per-block products: another order of the same terms
          want.forEach((v, i) => assert.ok(maxDiff(got[i], v) < 1e-12, `output ${i}: ${maxDiff(got[i], v)}`));
        },
      ),
      fcRuns(100),
    );
  });
});

describe("paper-size plans under lavapipe's limits (128 MiB a binding, 8 bindings a kernel)", () => {
  const blocksFit = (plan: Plan) => {
    for (const k of plan.kernels) assert.ok(k.bindings.length <= 8, `kernel #${k.index} ${k.label}: ${k.bindings.length} bindings`);
    for (const s of plan.memory.slots) assert.ok(s.size <= 128 * MiB, `slot ${s.id} (${s.role}): ${s.size} B`);
  };
  for (const file of ["models/clip-l14-llama7b-dehvf.dehvf", "models/clip-l14-llama7b-memvp.dehvf"])
    test(`${file}: forward and decode build, f32 and f16; the embedding and vocabulary projection split`, () => {
      const p = loadProgram(file);
      const m = elaborate(p);
      const { decode } = generationModels(p);
      for (const weights of ["f32", "f16"] as const) {
        const forward = buildPlan(m, { B: 1, T: 8 }, LAVAPIPE_LIMITS, undefined, { weights });
        const dec = buildPlan(decode, { B: 1, [CONTEXT_DIM]: 64 }, LAVAPIPE_LIMITS, undefined, { weights });
        for (const plan of [forward, dec]) {
          blocksFit(plan);
          const split = new Set(plan.params.flatMap((x) => (x.part ? [x.part.of] : [])));
          assert.ok(split.has("language.embed") && split.has("language.lm_head"), [...split].join(", "));
          // f16 halves the 172 MiB FFN weights below the limit: only the 250 MiB vocabulary tensors split
          if (weights === "f16") assert.deepEqual([...split].sort(), ["language.embed", "language.lm_head"]);
        }
      }
    });
});

test("the 7B DEHVF training step at B=4, T=512 with f16 weights plans under 128 MiB a binding: the logits' gradient is computed per vocabulary block", () => {
  const step = buildTrainGraph(elaborate(loadProgram("models/clip-l14-llama7b-dehvf.dehvf"), undefined, { training: true }));
  const plan = buildPlan(step.model, { B: 4, T: 512 }, LAVAPIPE_LIMITS, undefined, { weights: "f16", mutableParams: new Set(step.updates.map((u) => u.to)) });
  for (const k of plan.kernels) assert.ok(k.bindings.length <= 8, `kernel #${k.index} ${k.label}: ${k.bindings.length} bindings`);
  for (const s of plan.memory.slots) assert.ok(s.size <= 128 * MiB, `slot ${s.id} (${s.role}): ${s.size} B`);
});

describe("split weights on WebGPU (binding limit lowered)", () => {
  let saved: string | undefined;
  before(() => {
    saved = process.env.DEHVF_MAX_BINDING_BYTES;
  });
  after(() => {
    if (saved === undefined) delete process.env.DEHVF_MAX_BINDING_BYTES;
    else process.env.DEHVF_MAX_BINDING_BYTES = saved;
  });

  test("tiny-vqa forwards at a 96 KiB limit: the LM's FFN weights split, outputs equal the interpreter's", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    process.env.DEHVF_MAX_BINDING_BYTES = String(96 * 1024);
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
      const m = elaborate(loadProgram("models/tiny-vqa.dehvf"), name);
      const dims = { B: 1, T: 6 };
      const params = initAllParams(m, 0);
      const inputs = syntheticInputs(m, 0, dims);
      const r = await runWebgpu(g, m, params, inputs, dims);
      assert.ok(r.plan.params.filter((x) => x.part).length >= 8, `${name}: ${r.plan.params.filter((x) => x.part).length} blocks`);
      compare(r.outputs[0], runInterp(m, params, { seed: 0, dims, inputs })[0], 1e-4, `${name} split`, r.plan);
    }
  });

  test("a training step with split frozen weights (f32 and f16) equals the interpreter's", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    process.env.DEHVF_MAX_BINDING_BYTES = "28000";
    for (const weights of [undefined, ...(g.hasF16 ? (["f16"] as const) : [])]) {
      let blocks = 0;
      await checkTrainStep(g, elaborate(loadProgram(SPLIT_LM)), { B: 2, T: 6 }, (tr) => (blocks = tr.plan.params.filter((x) => x.part).length), weights);
      // f16 brings the 32 KiB embedding under the limit
      assert.ok(weights === "f16" ? blocks === 0 : blocks === 4, `${weights}: ${blocks} blocks`);
    }
  });

  test("prefill and decode steps with split weights equal the interpreter's", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    process.env.DEHVF_MAX_BINDING_BYTES = "28000";
    const p = loadProgram(SPLIT_LM);
    const models = generationModels(p);
    const params = initAllParams(elaborate(p), 2);
    // the decoder's plans split the 32 KiB embedding and vocabulary projection at this limit
    assert.ok(buildPlan(models.decode, { B: 2, [CONTEXT_DIM]: 16 }, planTarget(g)).params.some((x) => x.part));
    const a = new InterpDecoder(models, params, { batch: 2, context: 16 });
    const d = await DeviceDecoder.create(g, models, params, { batch: 2, context: 16 });
    try {
      const prompt = new Map([["tokens", tensor([2, 3], [1, 7, 300, 1, 511, 4])]]);
      let err = maxDiff(await a.prefill(prompt, 3), await d.prefill(prompt, 3));
      for (let s = 0; s < 4; s++) {
        const tok = Int32Array.of(9 * s + 2, 500 - s);
        const pos = Int32Array.of(3 + s, 3 + s);
        err = Math.max(err, maxDiff(await a.decode(tok, pos), await d.decode(tok, pos)));
      }
      assert.ok(err < 1e-5, `max |device − interp| = ${err}`);
    } finally {
      d.destroy();
    }
  });
});
