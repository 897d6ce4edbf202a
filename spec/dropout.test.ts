/**
 * Dropout (compiler/dropout.ts): the `hash` op it draws from, in the float64 interpreter
 * and on the device (the same u32 arithmetic: masks agree bit for bit), its statistics,
 * determinism per seed and step, the identity outside training (the same graph), the
 * DSL builtin and the std fusions' `dropout` parameter, and a compiled training step
 * with dropout on the device against the interpreter's.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { gradients } from "../compiler/autodiff.ts";
import { sym } from "../compiler/dims.ts";
import { DROPOUT_SEED, dropout, dropoutSeed, elementIndex } from "../compiler/dropout.ts";
import { elaborate, type ElaborateOptions } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import { hashUniform, pcgHash, saltMix } from "../compiler/hash.ts";
import { interpret } from "../compiler/interpret.ts";
import type { Node } from "../compiler/ir.ts";
import { numel, tensor } from "../compiler/tensor.ts";
import { DehvfError } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";
import { graphDigest } from "../train/identity.ts";
import { fcRuns } from "./fc-runs.ts";
import { Case, ints, uniform, useGpu } from "./gpu-check.ts";
import { GraphKit } from "./graph-model.ts";
import { checkTrainStep } from "./train-check.ts";

const { device, check } = useGpu();

/** x [n] through dropout(p) with the seed as an input; returns the interpreter's output and mask for `seed`. */
function dropped(n: number, p: number, salt = 1): (seed: number) => { out: Float64Array; kept: boolean[] } {
  const kit = new GraphKit();
  const x = kit.input("x", [n]);
  const y = dropout(kit.t, x, p, kit.input("seed", [], "i32"), salt);
  const xs = tensor(
    [n],
    Array.from({ length: n }, (_, i) => 1 + (i % 7)),
  );
  return (seed) => {
    const [out] = interpret([y], {
      dims: {},
      inputs: new Map([
        ["x", xs],
        ["seed", tensor([], [seed])],
      ]),
      params: new Map(),
    });
    return { out: out.data, kept: Array.from(out.data, (v) => v !== 0) };
  };
}

const agreement = (a: readonly boolean[], b: readonly boolean[]) => a.filter((k, i) => k === b[i]).length / a.length;

describe("the hash op", () => {
  test("pcg is PCG-RXS-M-XS-32 (values of the reference C code)", () => {
    const want: [number, number][] = [
      [0, 129708002],
      [1, 2831084092],
      [2, 2055130248],
      [12345, 4099845390],
      [0xffffffff, 3861530882],
      [0x80000000, 566699590],
    ];
    for (const [v, h] of want) assert.equal(pcgHash(v), h, `pcg(${v})`);
  });

  test("values are multiples of 2^-24 in [0, 1); an i32 key or counter hashes by its two's-complement bits", () => {
    const i32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
    fc.assert(
      fc.property(i32, i32, fc.nat(), (key, counter, salt) => {
        const u = hashUniform(key, counter, saltMix(salt));
        assert.ok(u >= 0 && u < 1 && Number.isInteger(u * 2 ** 24), `${u}`);
        assert.equal(hashUniform(key + (key < 0 ? 2 ** 32 : 0), counter + (counter < 0 ? 2 ** 32 : 0), saltMix(salt)), u);
      }),
      fcRuns(200),
    );
  });

  test("element indices count 0, 1, 2, … in row-major order, run-time dims included", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 0, maxLength: 4 }), fc.nat({ max: 3 }), (shape, symAt) => {
        const kit = new GraphKit();
        const dims: Record<string, number> = {};
        const symbolic = shape.map((d, i) => (i === symAt ? ((dims.S = d), sym("S")) : d));
        const [idx] = interpret([elementIndex(kit.t, symbolic)], { dims, inputs: new Map(), params: new Map() });
        assert.deepEqual(
          [...idx.data],
          Array.from({ length: numel(shape) }, (_, i) => i),
        );
      }),
      fcRuns(60),
    );
  });
});

describe("dropout in the interpreter", () => {
  test("deterministic per seed; different across seeds, steps and call sites", () => {
    const run = dropped(4096, 0.5);
    assert.deepEqual(run(7).out, run(7).out);
    // two independent masks at p = 0.5 agree on about half the elements
    const a = agreement(run(7).kept, run(8).kept);
    assert.ok(Math.abs(a - 0.5) < 0.05, `seeds 7 and 8 agree on ${a}`);
    const b = agreement(run(7).kept, dropped(4096, 0.5, 2)(7).kept);
    assert.ok(Math.abs(b - 0.5) < 0.05, `salts 1 and 2 agree on ${b}`);
    const steps = [1, 2, 3].map((s) => run(dropoutSeed(0, s)).kept);
    assert.ok(Math.abs(agreement(steps[0], steps[1]) - 0.5) < 0.05 && Math.abs(agreement(steps[1], steps[2]) - 0.5) < 0.05);
  });

  test("the keep rate is 1 − p and kept values are x / (1 − p)", () => {
    const n = 200_000;
    for (const p of [0.1, 0.5, 0.9]) {
      const { out, kept } = dropped(n, p)(dropoutSeed(3, 1));
      const rate = kept.filter(Boolean).length / n;
      const sigma = Math.sqrt((p * (1 - p)) / n);
      assert.ok(Math.abs(rate - (1 - p)) < 5 * sigma, `p ${p}: keep rate ${rate}`);
      out.forEach((v, i) => {
        if (v !== 0) assert.equal(v, (1 + (i % 7)) * (1 / (1 - p)));
      });
    }
  });

  test("the uniform numbers are uniform: a χ² test over 64 bins", () => {
    const kit = new GraphKit();
    const n = 64_000;
    const u = kit.t.make("hash", [kit.t.expand(kit.input("seed", [], "i32"), [n]), elementIndex(kit.t, [n])], { salt: 5 });
    const [v] = interpret([u], { dims: {}, inputs: new Map([["seed", tensor([], [dropoutSeed(0, 1)])]]), params: new Map() });
    const bins = new Array<number>(64).fill(0);
    for (const x of v.data) bins[Math.floor(x * 64)]++;
    const chi2 = bins.reduce((a, c) => a + (c - n / 64) ** 2 / (n / 64), 0);
    // 63 degrees of freedom: P(χ² > 110) < 1e-4
    assert.ok(chi2 < 110, `χ² = ${chi2}`);
  });

  test("dropoutSeed is a pure function of (seed, step), different for every step and seed, an ordinary i32", () => {
    const seen = new Set<number>();
    for (let seed = 0; seed < 4; seed++)
      for (let step = 1; step <= 5000; step++) {
        const s = dropoutSeed(seed, step);
        assert.ok(Number.isInteger(s) && s >= 0 && s < 2 ** 31);
        seen.add(s);
      }
    assert.equal(seen.size, 4 * 5000);
    assert.equal(dropoutSeed(2, 17), dropoutSeed(2, 17));
  });

  test("the gradient is the mask over 1 − p: exactly 0 where dropped", () => {
    const kit = new GraphKit();
    const x = kit.param("x", [64]);
    const y = dropout(kit.t, x, 0.25, kit.input("seed", [], "i32"), 3);
    const loss = kit.t.sum(y, 0);
    const [g] = gradients(kit.g, loss, [x]);
    const env = {
      dims: {},
      inputs: new Map([["seed", tensor([], [99])]]),
      params: new Map([
        [
          "x",
          tensor(
            [64],
            Array.from({ length: 64 }, (_, i) => i + 1),
          ),
        ],
      ]),
    };
    const [out, grad] = interpret([y, g], env);
    assert.ok(out.data.some((v) => v === 0) && out.data.some((v) => v !== 0));
    grad.data.forEach((d, i) => assert.equal(d, out.data[i] === 0 ? 0 : 1 / 0.75));
  });
});

describe("dropout(x, p) in the language", () => {
  const dir = mkdtempSync(join(tmpdir(), "dehvf-dropout-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const model = (body: string, name = "M", opts: ElaborateOptions = {}) => {
    const file = join(dir, `${name}-${Math.random().toString(36).slice(2)}.dehvf`);
    writeFileSync(file, body);
    return elaborate(loadProgram(file), name, opts);
  };
  const hashes = (m: { outputs: readonly { node: Node }[] }) => topoOrder(m.outputs.map((o) => o.node)).filter((n) => n.op === "hash");
  const block = `block Drop(d: int, dropout: float = 0.0) {
  param w: [d, d] init xavier
  forward(x: [B, d]) -> [B, d] = dropout(x @ w, dropout) + dropout(x, dropout)
}
`;
  const src = (p: string, calls = "drop(drop(x))") => `${block}model M {
  drop = Drop(8, ${p})
  forward(x: [B, 8]) -> [B, 8] = ${calls}
}
`;

  test("outside training dropout is x: the graph is the one written without it", () => {
    const plain = model(`block Drop(d: int) {
  param w: [d, d] init xavier
  forward(x: [B, d]) -> [B, d] = x @ w + x
}
model M {
  drop = Drop(8)
  forward(x: [B, 8]) -> [B, 8] = drop(drop(x))
}
`);
    const withDropout = model(src("0.3"));
    assert.equal(graphDigest(withDropout), graphDigest(plain));
    assert.equal(hashes(withDropout).length, 0);
    assert.ok(!withDropout.inputs.some((i) => i.name === DROPOUT_SEED));
    // p = 0 while training is the same graph too
    assert.equal(graphDigest(model(src("0.0"), "M", { training: true })), graphDigest(plain));
  });

  test("while training it reads `dropout_seed`; every call has its own salt, a shared block at each call", () => {
    const m = model(src("0.3"), "M", { training: true });
    assert.deepEqual(
      m.inputs.map((i) => [i.name, i.dtype, i.shape.length]),
      [
        ["x", "f32", 2],
        [DROPOUT_SEED, "i32", 0],
      ],
    );
    const salts = hashes(m).map((h) => (h.attrs as { salt: number }).salt);
    assert.equal(salts.length, 4, "two sites, each called twice");
    assert.equal(new Set(salts).size, 4);
    const env = (seed: number) => ({
      dims: { B: 3 },
      inputs: new Map([
        [
          "x",
          tensor(
            [3, 8],
            Array.from({ length: 24 }, (_, i) => (i % 5) - 2),
          ),
        ],
        [DROPOUT_SEED, tensor([], [seed])],
      ]),
      params: new Map([
        [
          "drop.w",
          tensor(
            [8, 8],
            Array.from({ length: 64 }, (_, i) => ((i * 7) % 11) / 10 - 0.5),
          ),
        ],
      ]),
    });
    const [a] = interpret([m.outputs[0].node], env(1));
    const [b] = interpret([m.outputs[0].node], env(1));
    const [c] = interpret([m.outputs[0].node], env(2));
    assert.deepEqual(a.data, b.data);
    assert.notDeepEqual(a.data, c.data);
  });

  test("the std fusions take `dropout` (0 by default: nothing changes) and MemVP at paper size declares 0.1", () => {
    const micro = loadProgram("spec/fixtures/train/micro.dehvf");
    // micro's DEHVF drops in its shared FFN memory at both LLM layers, MemVP also in the live ViT adapter
    assert.equal(hashes(elaborate(micro, "TinyVQA", { training: true })).length, 2);
    assert.equal(hashes(elaborate(micro, "TinyVQAMemVP", { training: true })).length, 3);
    const tiny = loadProgram("models/tiny-vqa.dehvf");
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
      assert.equal(graphDigest(elaborate(tiny, name, { training: true })), graphDigest(elaborate(tiny, name)), name);
    const memvp = readFileSync("models/clip-l14-llama7b-memvp.dehvf", "utf8");
    assert.match(memvp, /MemVP\([^)]*dropout: 0\.1\)/);
    assert.match(memvp, /Adapter\([^)]*dropout: 0\.1\)/);
  });

  test("p outside [0, 1) and int tensors are located errors", () => {
    for (const [p, re] of [
      ["1.0", /0 <= p < 1, got 1/],
      ["-0.5", /got -0\.5/],
    ] as const) {
      assert.throws(
        () => model(src(p)),
        (e: unknown) => e instanceof DehvfError && re.test(e.message) && e.diagnostics[0].span !== undefined,
      );
    }
    assert.throws(() => model(`model M {\n  forward(t: [B] int) -> [B] = float(dropout(t, 0.1))\n}\n`), /dropout\(\) needs a float tensor/);
  });
});

describe("dropout on the device", () => {
  test("the mask equals the interpreter's bit for bit, values within 1e-6 (scalar, vec4 and matmul-epilogue kernels)", async (t) => {
    for (const [shape, k] of [
      [[3, 5, 33], 0],
      [[2, 7, 64], 0],
      [[37, 20], 9],
    ] as const) {
      const c = new Case(11);
      const seed = c.in("seed", [], "i32", ints(-(2 ** 31), 2 ** 31 - 1));
      // k > 0: dropout of a matmul's output, fused as its epilogue
      const x = k ? c.t.matmul(c.in("a", [shape[0], k]), c.w("w", [k, shape[1]])) : c.in("x", [...shape], "f32", uniform(-2, 2));
      const u = c.t.make("hash", [c.t.expand(seed, x.shape), elementIndex(c.t, x.shape)], { salt: 77 });
      const y = dropout(c.t, x, 0.3, seed, 77);
      if (!(await check(t, c, [u, y], { tol: [0, 1e-6], pipeline: true, what: `dropout of [${shape.join(", ")}]${k ? " (matmul epilogue)" : ""}` }))) return;
    }
  });

  test("a training step with dropout (MemVP: FFN memory and ViT adapters) equals the interpreter's", async (t) => {
    const g = device(t);
    if (!g) return;
    const m = elaborate(loadProgram("spec/fixtures/train/micro.dehvf"), "TinyVQAMemVP", { training: true });
    assert.ok(m.inputs.some((i) => i.name === DROPOUT_SEED));
    await checkTrainStep(g, m, { B: 2, T: 6 });
  });
});
