/**
 * Plans that read constant matmul B operands (frozen weights) from textures ("sg-texture"):
 * the WebGPU result against the float64 interpreter on awkward shapes, weights read
 * transposed and not and shared by several kernels, the tiny-vqa forwards, a training
 * step whose frozen weights use textures and trainable ones do not, and re-written
 * parameters refreshing their textures. Plans where the target does not pick the texture
 * variant stay as they were.
 */
import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import fc from "fast-check";
import { elaborate } from "../compiler/elaborate.ts";
import { interpret } from "../compiler/interpret.ts";
import type { Node } from "../compiler/ir.ts";
import { buildPlan, type Plan, type PlanTarget } from "../lowering/plan.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { loadProgram } from "../grammar/modules.ts";
import { subgroupsUsable } from "../kernels/matmul.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { runWebgpu } from "../runtime/webgpu-backend.ts";
import { fcRuns } from "./fc-runs.ts";
import { accTol, Case, compare, dimArb, seedArb, uniform, useGpu } from "./gpu-check.ts";
import { checkTrainStep } from "./train-check.ts";

const fx = useGpu();

/** The device, or undefined after skipping the test where the target never picks "sg-texture". */
function textureDevice(t: TestContext) {
  const g = fx.device(t);
  if (!g) return undefined;
  if (!fx.target.isFallback || !subgroupsUsable(fx.target)) {
    t.skip("this adapter does not run the texture variant");
    return undefined;
  }
  return g;
}

/** Kernels that bind a texture at 2, with the parameter each reads. */
const textureKernels = (plan: Plan) =>
  plan.kernels.flatMap((k) => k.bindings.filter((b) => b.texture !== undefined).map((b) => ({ k, param: plan.textures[b.texture!].param })));

/** Each texture kernel is sg-texture and its texture names the parameter at its binding 2's slot. */
function assertTexturesWellFormed(plan: Plan): void {
  for (const { k, param } of textureKernels(plan)) {
    assert.match(k.variant, /^sg-texture/, `kernel #${k.index}`);
    const b2 = k.bindings.find((b) => b.binding === 2)!;
    assert.equal(plan.params.find((p) => p.name === param)?.slot, b2.slot, `kernel #${k.index} reads ${param}`);
  }
  for (const k of plan.kernels)
    if (k.variant.startsWith("sg-texture"))
      assert.ok(
        k.bindings.some((b) => b.texture !== undefined),
        `#${k.index} is sg-texture without a texture`,
      );
}

describe("matmuls with constant B from textures", () => {
  test("random awkward M, N, K (N not a multiple of 4, K not of the k step, 1s), B read as is, transposed and batched", async (t) => {
    if (!textureDevice(t)) return;
    await fc.assert(
      fc.asyncProperty(dimArb, dimArb, dimArb, fc.constantFrom(1, 2, 3), seedArb, async (M, N, K, batch, seed) => {
        const c = new Case(seed);
        const { t: o } = c;
        const x = c.in("x", batch > 1 ? [batch, M, K] : [M, K]);
        const w = c.w("w", [K, N]);
        // read only as vᵀ: the plan stores it transposed, B is unit-stride
        const v = c.w("v", [N, K]);
        // one weight matrix per batch entry: the texture holds `batch` matrices
        const wb = c.w("wb", [batch, K, N]);
        const bias = c.w("bias", [N]);
        const outs = [o.matmul(x, w), o.add(o.matmul(x, o.permute(v, [1, 0])), bias), o.matmul(x, wb)];
        const plan = await fx.check(t, c, outs, { tol: accTol(K), what: `[${batch}] ${M}x${N}x${K}` });
        assertTexturesWellFormed(plan!);
        assert.deepEqual(new Set(plan!.textures.map((x) => x.param)), new Set(["w", "v", "wb"]));
      }),
      fcRuns(8),
    );
  });

  test("a weight shared by several kernels: one texture per way it is read", async (t) => {
    if (!textureDevice(t)) return;
    const c = new Case(7);
    const { t: o } = c;
    const [K, N] = [37, 29];
    const w = c.w("w", [K, N]);
    const sq = c.w("sq", [K, K]);
    const x1 = c.in("x1", [5, K]);
    const x2 = c.in("x2", [2, 9, K]);
    const y = c.in("y", [3, N]);
    const outs = [
      o.matmul(x1, w),
      o.unary("tanh", o.matmul(x2, w)), // same layout: shares the texture
      o.matmul(y, o.permute(w, [1, 0])), // w read transposed: a second texture of w
      o.matmul(x1, sq),
      o.matmul(x1, o.permute(sq, [1, 0])), // a square weight both ways: same size, other layout
    ];
    const plan = (await fx.check(t, c, outs, { tol: accTol(K) }))!;
    assertTexturesWellFormed(plan);
    const per = (p: string) => plan.textures.filter((x) => x.param === p).length;
    assert.equal(textureKernels(plan).length, 5);
    assert.equal(per("w"), 2);
    assert.equal(per("sq"), 2);
  });

  test("writing new parameter values (all, partial, or by a run's copies) refreshes the textures", async (t) => {
    const g = textureDevice(t);
    if (!g) return;
    const c = new Case(11);
    const { t: o } = c;
    const x = c.in("x", [7, 13]);
    const w = c.w("w", [13, 6]);
    const v = c.w("v", [6, 13]);
    const outs: Node[] = [o.add(o.matmul(x, w), c.c(1)), o.matmul(x, o.permute(v, [1, 0])), o.mul(w, c.c(2))];
    const model = c.model("refresh", outs);
    const plan = buildPlan(
      model,
      {},
      fx.target,
      model.outputs.map((r) => ({ name: r.name, node: r.node })),
    );
    assert.equal(plan.textures.length, 2);
    const ex = await PlanExecutor.create(g, plan);
    const expect = async (params: ReadonlyMap<string, Tensor>, what: string, got?: Tensor[]) => {
      const want = interpret(outs, { dims: {}, inputs: c.values, params });
      const out = got ?? (await ex.run(c.values));
      out.forEach((x, i) => compare(x, want[i], accTol(13), `${what} out${i}`, plan));
    };
    const random = (shape: number[]) => ({ shape, data: Float64Array.from({ length: shape[0] * shape[1] }, () => uniform(-1, 1)(c.rand, 0)) });
    try {
      ex.writeParams(c.params);
      await expect(c.params, "first values");
      const second = new Map([
        ["w", random([13, 6])],
        ["v", random([6, 13])],
      ]);
      ex.writeParams(second);
      await expect(second, "all parameters re-written");
      const third = new Map([...second, ["v", random([6, 13])]]);
      ex.writeParams(new Map([["v", third.get("v")!]]), { partial: true });
      await expect(third, "v re-written alone");
      // copies onto a parameter the plan reads from a texture (it was not declared mutable)
      await ex.run(c.values, { copies: [{ from: "out2", to: "w" }] });
      const fourth = new Map([...third, ["w", { shape: [13, 6], data: third.get("w")!.data.map((x) => 2 * x) }]]);
      await expect(fourth, "w overwritten by a run's copy");
    } finally {
      ex.destroy();
    }
  });

  test("no textures where the target does not pick the texture variant, with textureB: false, or for mutable parameters", (t) => {
    const g = fx.device(t);
    if (!g) return;
    const c = new Case(3);
    const x = c.in("x", [9, 21]);
    const w = c.w("w", [21, 10]);
    const model = c.model("plain", [c.t.matmul(x, w)]);
    const roots = model.outputs.map((r) => ({ name: r.name, node: r.node }));
    const plan = (target: PlanTarget, opts = {}) => buildPlan(model, {}, target, roots, opts);
    const off = plan(fx.target, { textureB: false });
    assert.deepEqual(off.textures, []);
    assert.deepEqual(plan(fx.target, { mutableParams: new Set(["w"]) }), off, "a mutable B plans as without textures");
    for (const target of [
      { ...fx.target, isFallback: false },
      { ...fx.target, subgroupSize: 0, subgroupMaxSize: 0 },
    ]) {
      const on = plan(target);
      assert.deepEqual(on, plan(target, { textureB: false }));
      assert.ok(on.kernels.every((k) => !k.variant.startsWith("sg-texture") && !k.wgsl.includes("texture_2d")));
    }
  });

  test("texture kernels are not autotuned: the table is not asked for them, so it cannot swap their binding", (t) => {
    if (!textureDevice(t)) return;
    const c = new Case(4);
    const x = c.in("x", [33, 64]);
    const y = c.in("y", [64, 40]);
    const w = c.w("w", [64, 48]);
    const model = c.model("tuned", [c.t.matmul(x, w), c.t.matmul(x, y)]);
    const roots = model.outputs.map((r) => ({ name: r.name, node: r.node }));
    const asked: string[] = [];
    const tuned = buildPlan(model, {}, fx.target, roots, { matmulTuning: { get: (k) => (asked.push(k), { variant: "simple" }) } });
    const plain = buildPlan(model, {}, fx.target, roots);
    assert.equal(asked.length, 1, "only the matmul with an input as B is looked up");
    assert.deepEqual(tuned.textures, plain.textures);
    assert.equal(tuned.kernels[0].wgsl, plain.kernels[0].wgsl);
    assert.equal(tuned.kernels[1].variant, "simple");
  });

  test("tiny-vqa forward plans on a GPU-like target and one without subgroups do not change", (t) => {
    const g = fx.device(t);
    if (!g) return;
    const program = loadProgram("models/tiny-vqa.dehvf");
    for (const target of [
      { ...fx.target, isFallback: false },
      { ...fx.target, subgroupSize: 0, subgroupMaxSize: 0 },
    ])
      for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
        const m = elaborate(program, name);
        const wgsl = (textureB: boolean) => buildPlan(m, { B: 2, T: 8 }, target, undefined, { textureB }).kernels.map((k) => k.wgsl);
        assert.deepEqual(wgsl(true), wgsl(false), name);
      }
  });
});

describe("tiny-vqa with textures", () => {
  const program = loadProgram("models/tiny-vqa.dehvf");
  for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
    test(`${name} forward matches the interpreter, frozen weights read from textures`, async (t) => {
      const g = textureDevice(t);
      if (!g) return;
      const dims = { B: 2, T: 5 };
      const m = elaborate(program, name);
      const params = initAllParams(m, 0);
      const inputs = syntheticInputs(m, 0, dims);
      const want = runInterp(m, params, { seed: 0, dims, inputs });
      const r = await runWebgpu(g, m, params, inputs, dims);
      assertTexturesWellFormed(r.plan);
      assert.ok(textureKernels(r.plan).length > 0, "no kernel reads a texture");
      want.forEach((w, i) => compare(r.outputs[i], w, 1e-4, `${name} ${m.outputs[i].name}`, r.plan));
    });

  test("a training step: frozen weights from textures, trainable ones from buffers, same result as the interpreter", async (t) => {
    const g = textureDevice(t);
    if (!g) return;
    const micro = loadProgram("spec/fixtures/train/micro.dehvf");
    for (const name of ["TinyVQA", "TinyVQAMemVP"])
      await checkTrainStep(g, elaborate(micro, name), { B: 2, T: 6 }, (trainer) => {
        const plan = trainer.plan;
        const updated = new Set(trainer.graph.updates.map((u) => u.to));
        assertTexturesWellFormed(plan);
        assert.ok(plan.textures.length > 0, `${name}: no frozen weight read from a texture`);
        for (const tex of plan.textures) assert.ok(!updated.has(tex.param), `${name}: ${tex.param} is updated by the step but read from a texture`);
        // a trainable weight read as B where the target would pick textures stays a buffer
        const trainableB = plan.kernels.filter(
          (k) => k.kind === "matmul" && k.bindings.some((b) => b.binding === 2 && plan.params.some((p) => updated.has(p.name) && p.slot === b.slot)),
        );
        assert.ok(trainableB.length > 0, `${name}: no trainable weight read as B`);
        for (const k of trainableB) assert.ok(!k.variant.startsWith("sg-texture"), `${name}: kernel #${k.index} reads a trainable weight from a texture`);
      });
  });

  test("the step plan built without mutableParams would read updated weights from textures (the trainer must pass them)", (t) => {
    if (!textureDevice(t)) return;
    const model = elaborate(loadProgram("spec/fixtures/train/micro.dehvf"), "TinyVQA");
    const graph = buildTrainGraph(model);
    const plan = buildPlan(graph.model, { B: 2, T: 6 }, fx.target);
    const updated = new Set(graph.updates.map((u) => u.to));
    assert.ok(plan.textures.some((x) => updated.has(x.param)));
  });
});
