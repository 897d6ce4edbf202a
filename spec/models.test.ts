import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { dimStr } from "../compiler/dims.ts";
import { topoOrder } from "../compiler/graph.ts";
import type { Node } from "../compiler/ir.ts";
import { runPipeline } from "../compiler/pipeline.ts";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { loadProgram, type Program } from "../grammar/modules.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";

const dims = { B: 1, T: 4 };

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

/** Runs the model on its synthetic batch for `seed`, with the image replaced by `image` if given. */
function logits(m: CompiledModel, seed: number, image?: Tensor): Tensor {
  const inputs = new Map<string, Tensor>();
  if (image) inputs.set("image", image);
  return runInterp(m, initAllParams(m, seed), { seed, dims, inputs })[0];
}

function otherImage(m: CompiledModel): Tensor {
  const img = syntheticInputs(m, 1234, dims).get("image")!;
  return img;
}

describe("tiny-vqa", () => {
  let program: Program;
  before(() => {
    program = loadProgram("models/tiny-vqa.dehvf");
  });

  test("interpreter output is deterministic for a seed and changes with the seed", () => {
    const m = elaborate(program, "TinyVQA");
    const a = logits(m, 7);
    const b = logits(m, 7);
    assert.equal(maxAbsDiff(a, b), 0);
    assert.ok(maxAbsDiff(a, logits(m, 8)) > 1e-3);
  });

  for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
    test(`${name}: changing the image changes the language-model logits (fusion is wired)`, () => {
      const m = elaborate(program, name);
      const base = logits(m, 0);
      const moved = logits(m, 0, otherImage(m));
      const d = maxAbsDiff(base, moved);
      assert.ok(d > 1e-7, `logits moved by only ${d}`);
      assert.ok(Number.isFinite(d));
    });
  }

  test("control: the same backbones without a fusion ignore the image", () => {
    const dir = mkdtempSync(join(tmpdir(), "dehvf-"));
    const file = join(dir, "nofusion.dehvf");
    writeFileSync(
      file,
      `import "std/vit.dehvf"\nimport "std/llama.dehvf"\n` +
        `model NoFusion {\n  vision = ViT(image: 56, patch: 7, d: 64, layers: 4, heads: 4, mlp: 256, channels: 1) frozen\n` +
        `  language = Llama(vocab: 128, d: 128, layers: 4, heads: 4, ffn: 344) frozen\n` +
        `  forward(image: [B, 1, 56, 56], tokens: [B, T] int) -> [B, T, 128] {\n    vision(image)\n    return language(tokens)\n  }\n}\n`,
    );
    const m = elaborate(loadProgram(file), "NoFusion");
    assert.equal(maxAbsDiff(logits(m, 0), logits(m, 0, otherImage(m))), 0);
  });

  test("concat's sequence is longer by the number of visual tokens; DEHVF's and MemVP's is not", () => {
    const dehvf = elaborate(program, "TinyVQA");
    const memvp = elaborate(program, "TinyVQAMemVP");
    const concat = elaborate(program, "TinyVQAConcat");
    const seq = (m: CompiledModel) => dimStr(m.outputs[0].node.shape[1]);
    assert.equal(seq(dehvf), "T");
    assert.equal(seq(memvp), "T");
    const patches = (56 / 7) * (56 / 7);
    assert.equal(seq(concat), `T + ${patches}`);
    assert.equal(logits(concat, 0).shape[1], dims.T + patches);
  });

  test("DEHVF embeds memory in every LLM layer and MemVP reads a single ViT layer", () => {
    const dehvf = elaborate(program, "TinyVQA");
    assert.deepEqual(
      dehvf.fusions[0].targets,
      [0, 1, 2, 3].map((i) => `language.layer.${i}.memory`),
    );
    const memvp = elaborate(program, "TinyVQAMemVP");
    assert.equal(memvp.fusions.find((f) => f.name === "adapters")!.targets.length, 4);
  });

  test("trainable parameters are exactly the fusion modules", () => {
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) {
      const m = elaborate(program, name);
      const fusionNames = m.fusions.map((f) => f.name);
      for (const p of m.params) assert.equal(p.trainable, fusionNames.includes(p.name.split(".")[0]), p.name);
    }
  });
});

describe("bench models (models/bench/dehvf-vs-concat.dehvf)", () => {
  const program = loadProgram("models/bench/dehvf-vs-concat.dehvf");
  const params = (m: CompiledModel, keep: (name: string) => boolean) =>
    m.params.filter((p) => keep(p.name)).map((p) => `${p.name} ${p.shape.map(dimStr).join("x")}`);

  test("BenchBackbones is BenchDEHVF without its fusion: the same ViT and LLM parameters, no fusion", () => {
    const dehvf = elaborate(program, "BenchDEHVF");
    const bare = elaborate(program, "BenchBackbones");
    assert.deepEqual(bare.fusions, []);
    const fusion = dehvf.fusions.map((f) => f.name);
    assert.deepEqual(
      params(bare, () => true),
      params(dehvf, (n) => !fusion.includes(n.split(".")[0])),
    );
    assert.deepEqual(
      params(bare, () => true),
      params(elaborate(program, "BenchConcat"), (n) => n.split(".")[0] !== "concat"),
    );
  });

  test("BenchBackbones uses every parameter after the pass pipeline: its CLS keeps the whole ViT in the plan", () => {
    const bare = elaborate(program, "BenchBackbones");
    const live = new Set(
      topoOrder(runPipeline(bare.outputs, bare.graph).map((r) => r.node)).flatMap((n) => (n.op === "param" ? [(n as Node<"param">).attrs.name] : [])),
    );
    assert.deepEqual(
      bare.params.filter((p) => !live.has(p.name)).map((p) => p.name),
      [],
    );
  });
});
