import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import type { InitRule } from "../compiler/ir.ts";
import { initParam } from "../compiler/param-init.ts";
import { rng, seededRng } from "../util/rng.ts";
import { numel } from "../compiler/tensor.ts";

const nameArb = fc.stringMatching(/^[a-z][a-z0-9_]{0,8}(\.[a-z0-9_]{1,6}){0,3}$/);
const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const shapeArb = fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 4 });
const randomRules: InitRule[] = [{ kind: "normal", std: 0.02, mean: 0 }, { kind: "uniform", bound: 0.1 }, { kind: "xavier" }];

const stats = (d: Float64Array) => {
  const mean = d.reduce((a, b) => a + b, 0) / d.length;
  const variance = d.reduce((a, b) => a + (b - mean) ** 2, 0) / (d.length - 1);
  return { mean, std: Math.sqrt(variance) };
};

describe("param-init", () => {
  test("same (seed, name) gives an identical tensor", () => {
    fc.assert(
      fc.property(seedArb, nameArb, shapeArb, fc.constantFrom(...randomRules), (seed, name, shape, rule) => {
        const a = initParam(name, shape, rule, seed);
        const b = initParam(name, shape, rule, seed);
        assert.deepEqual(a.shape, shape);
        assert.equal(a.data.length, numel(shape));
        assert.deepEqual(a.data, b.data);
        assert.notEqual(a.data, b.data, "fresh storage each call");
      }),
      { numRuns: 50 },
    );
  });

  test("a different name or seed gives a different tensor", () => {
    fc.assert(
      fc.property(seedArb, seedArb, nameArb, nameArb, fc.constantFrom(...randomRules), (s1, s2, n1, n2, rule) => {
        const shape = [4, 4];
        const base = initParam(n1, shape, rule, s1);
        if (n1 !== n2) assert.notDeepEqual(initParam(n2, shape, rule, s1).data, base.data, `names ${n1} / ${n2}`);
        if (s1 !== s2) assert.notDeepEqual(initParam(n1, shape, rule, s2).data, base.data, `seeds ${s1} / ${s2}`);
      }),
      { numRuns: 100 },
    );
    // near-miss names and neighbouring seeds
    const w = (name: string, seed = 0) => initParam(name, [8], { kind: "xavier" }, seed).data;
    assert.notDeepEqual(w("layer.1.w"), w("layer.10.w"));
    assert.notDeepEqual(w("a.b"), w("ab"));
    assert.notDeepEqual(w("x", 0), w("x", 1));
  });

  test("a parameter's values do not depend on its siblings or the call order", () => {
    const before = initParam("b", [5], { kind: "normal", std: 1, mean: 0 }, 3).data;
    initParam("a", [100], { kind: "normal", std: 1, mean: 0 }, 3);
    assert.deepEqual(initParam("b", [5], { kind: "normal", std: 1, mean: 0 }, 3).data, before);
    // a longer tensor of the same name starts with the same stream
    assert.deepEqual(initParam("b", [7], { kind: "normal", std: 1, mean: 0 }, 3).data.subarray(0, 5), before);
  });

  test("xavier values lie within ±sqrt(6 / (fan_in + fan_out))", () => {
    fc.assert(
      fc.property(seedArb, nameArb, shapeArb, (seed, name, shape) => {
        const fanOut = shape[0];
        const fanIn = shape.length > 1 ? numel(shape.slice(1)) : fanOut;
        const bound = Math.sqrt(6 / (fanIn + fanOut));
        const t = initParam(name, shape, { kind: "xavier" }, seed);
        for (const v of t.data) assert.ok(Math.abs(v) <= bound, `${v} outside ±${bound} for [${shape}]`);
      }),
      { numRuns: 100 },
    );
    // and it uses the range: a big sample gets close to both ends
    const t = initParam("w", [64, 64], { kind: "xavier" }, 1);
    const bound = Math.sqrt(6 / 128);
    assert.ok(Math.max(...t.data) > 0.95 * bound && Math.min(...t.data) < -0.95 * bound);
    assert.ok(Math.abs(stats(t.data).std - bound / Math.sqrt(3)) < 0.05 * bound);
  });

  test("uniform(bound) stays within the bound", () => {
    fc.assert(
      fc.property(seedArb, fc.double({ min: 1e-3, max: 10, noNaN: true }), (seed, bound) => {
        const t = initParam("u", [200], { kind: "uniform", bound }, seed);
        for (const v of t.data) assert.ok(Math.abs(v) <= bound);
      }),
      { numRuns: 30 },
    );
  });

  test("normal(0.02): sample std within 10% on 10k elements, mean near 0", () => {
    for (const seed of [0, 1, 42, 12345]) {
      const t = initParam("embed.weight", [100, 100], { kind: "normal", std: 0.02, mean: 0 }, seed);
      const { mean, std } = stats(t.data);
      assert.ok(Math.abs(std - 0.02) <= 0.002, `seed ${seed}: std ${std}`);
      // the standard error of the mean is 0.02 / 100; allow 5 of those
      assert.ok(Math.abs(mean) <= 0.001, `seed ${seed}: mean ${mean}`);
      for (const v of t.data) assert.ok(Number.isFinite(v));
    }
    const shifted = stats(initParam("b", [10_000], { kind: "normal", std: 0.5, mean: 3 }, 7).data);
    assert.ok(Math.abs(shifted.mean - 3) < 0.05 && Math.abs(shifted.std - 0.5) < 0.05);
  });

  test("zeros, ones and const", () => {
    fc.assert(
      fc.property(seedArb, nameArb, shapeArb, fc.double({ noNaN: true }), (seed, name, shape, value) => {
        const z = initParam(name, shape, { kind: "zeros" }, seed);
        const o = initParam(name, shape, { kind: "ones" }, seed);
        const c = initParam(name, shape, { kind: "const", value }, seed);
        assert.deepEqual([z.shape, o.shape, c.shape], [shape, shape, shape]);
        for (let i = 0; i < z.data.length; i++) {
          assert.ok(Object.is(z.data[i], 0));
          assert.equal(o.data[i], 1);
          assert.ok(Object.is(c.data[i], value));
        }
      }),
      { numRuns: 50 },
    );
  });

  test("scalar parameters have one element", () => {
    for (const rule of [...randomRules, { kind: "ones" } as InitRule]) {
      const t = initParam("s", [], rule, 0);
      assert.deepEqual(t.shape, []);
      assert.equal(t.data.length, 1);
      assert.ok(Number.isFinite(t.data[0]));
    }
  });

  test("the rng is deterministic and uniform on [0, 1)", () => {
    const a = rng(123);
    const b = rng(123);
    const xs = Array.from({ length: 10_000 }, () => a());
    assert.deepEqual(
      Array.from({ length: 10_000 }, () => b()),
      xs,
    );
    for (const x of xs) assert.ok(x >= 0 && x < 1);
    // ten equal bins, each within 15% of its expected count
    const bins = new Array<number>(10).fill(0);
    for (const x of xs) bins[Math.floor(x * 10)]++;
    for (const c of bins) assert.ok(Math.abs(c - 1000) < 150, `bins ${bins}`);
    const u = seededRng(0, "w");
    const v = seededRng(0, "w");
    assert.equal(u(), v());
    assert.notEqual(seededRng(0, "w")(), seededRng(0, "v")());
  });
});
