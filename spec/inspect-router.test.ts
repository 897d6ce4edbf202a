/**
 * `dehvf inspect router`: the routing weights α of a trained DEHVF fusion, read out of the
 * compiled model through its `alpha` taps (compiler/tap-outputs.ts), averaged over held-out
 * questions on the device and in the float64 interpreter; router.json and router.png. Also:
 * a model without a router is refused, and a "fixed" DEHVF reports its learned mixing weights.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import sharp from "sharp";
import { elaborate } from "../compiler/elaborate.ts";
import { tapOutputName, withTapOutputs } from "../compiler/tap-outputs.ts";
import { tensor } from "../compiler/tensor.ts";
import { buildDefaultData } from "../data/build.ts";
import type { RouterReport } from "../eval/router.ts";
import { loadProgram } from "../grammar/modules.ts";
import { storedParams } from "../io/checkpoints/load.ts";
import { heatmapLayout } from "../io/heatmap.ts";
import { initAllParams } from "../runtime/interp-backend.ts";
import { saveTensors } from "../train/checkpoint.ts";
import { gpuSkipReason } from "./gpu-check.ts";

const MICRO = "spec/fixtures/train/micro.dehvf";

let work = "";
let data = "";
let gpuSkip = "";

function dehvf(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 300_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const readReport = (dir: string): RouterReport & { step?: number; backend: string } => JSON.parse(readFileSync(join(dir, "router.json"), "utf8"));

before(async () => {
  gpuSkip = await gpuSkipReason();
  work = mkdtempSync(join(tmpdir(), "dehvf-router-"));
  data = join(work, "data");
  await buildDefaultData(data, { train: 200, val: 50, test: 50 });
});
after(() => rmSync(work, { recursive: true, force: true }));

const gpu = (t: TestContext) => {
  if (gpuSkip) t.skip(gpuSkip);
  return !gpuSkip;
};

const rowSums = (m: readonly (readonly number[])[]) => m.map((row) => row.reduce((a, x) => a + x, 0));

function assertClose(got: readonly (readonly number[])[], want: readonly (readonly number[])[], tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: rows`);
  got.forEach((row, l) => row.forEach((x, j) => assert.ok(Math.abs(x - want[l][j]) <= tol, `${what}[${l}][${j}]: ${x} vs ${want[l][j]}`)));
}

async function pngSize(file: string): Promise<[number, number]> {
  const meta = await sharp(file).metadata();
  assert.equal(meta.format, "png");
  return [meta.width!, meta.height!];
}

describe("taps as outputs", () => {
  test("a shared fusion's tap has one value per target, each named and placed by its site", () => {
    const model = elaborate(loadProgram(MICRO), "TinyVQA");
    const { model: tapped, taps } = withTapOutputs(model, ["dehvf.alpha"]);
    assert.deepEqual(
      taps.map((t) => t.site),
      ["language.layer.0.memory", "language.layer.1.memory"],
    );
    assert.deepEqual(
      tapped.outputs.map((o) => o.name),
      ["out", tapOutputName("dehvf.alpha", 0), tapOutputName("dehvf.alpha", 1)],
    );
    assert.deepEqual(
      taps.map((t) => t.shape.map(String)),
      [
        ["2", "B"],
        ["2", "B"],
      ],
    );
    assert.deepEqual(
      withTapOutputs(model, ["dehvf.alpha"], { keep: false }).model.outputs.map((o) => o.name),
      taps.map((t) => t.name),
    );
    assert.equal(model.outputs.length, 1, "the model itself is unchanged");
    assert.throws(() => withTapOutputs(model, ["dehvf.alpah"]), /no tap `dehvf\.alpah`; did you mean `dehvf\.alpha`/);
  });
});

describe("dehvf inspect router", () => {
  let trained = "";
  before(() => {
    if (gpuSkip) return;
    const out = join(work, "runs");
    const r = dehvf(["train", MICRO, "--data", data, "--out", out, "--eval-problems", "8", "--eval-captions", "2"]);
    assert.equal(r.code, 0, r.err + r.out);
    trained = join(out, "finetune-TinyVQA");
  });

  test("router.json: a distribution over ViT layers per LLM layer, the model's shape, equal to the interpreter's; router.png", async (t) => {
    if (!gpu(t)) return;
    const common = ["inspect", "router", MICRO, "--checkpoint", trained, "--data", data, "--problems", "40", "--batch", "16"];
    const dev = dehvf([...common, "-o", join(work, "gpu")]);
    assert.equal(dev.code, 0, dev.err + dev.out);
    assert.match(dev.out, /mean α over 40 test questions/);
    const ref = dehvf([...common, "-o", join(work, "interp"), "--backend", "interp"]);
    assert.equal(ref.code, 0, ref.err + ref.out);
    const r = readReport(join(work, "gpu"));
    const want = readReport(join(work, "interp"));

    // the model's layers × ViT layers, in order
    const model = elaborate(loadProgram(MICRO), "TinyVQA");
    const vitLayers = model.root.children.get("vision") as { args: ReadonlyMap<string, { value: unknown }> };
    assert.deepEqual(
      r.llm_layers,
      model.fusions.find((f) => f.name === "dehvf")!.targets.map((s) => s.replace(/\.memory$/, "")),
    );
    assert.deepEqual(
      r.vit_layers,
      Array.from({ length: Number(vitLayers.args.get("layers")!.value) }, (_, j) => String(j)),
    );
    assert.equal(r.mean.length, r.llm_layers.length);
    for (const row of r.mean) assert.equal(row.length, r.vit_layers.length);
    assert.equal(r.examples, 40);
    assert.equal(r.backend, "webgpu");
    assert.equal(r.step, 4);

    // a probability distribution per LLM layer, overall and per question type
    for (const s of rowSums(r.mean)) assert.ok(Math.abs(s - 1) <= 1e-5, `row sum ${s}`);
    assert.ok(r.mean.flat().every((x) => x > 0 && x < 1));
    const types = Object.entries(r.per_type);
    assert.ok(types.length >= 4, Object.keys(r.per_type).join(", "));
    assert.equal(
      types.reduce((a, [, p]) => a + p.examples, 0),
      40,
    );
    for (const [type, p] of types) for (const s of rowSums(p.mean)) assert.ok(Math.abs(s - 1) <= 1e-5, `${type}: row sum ${s}`);

    // the device's means are the float64 interpreter's, overall and per type
    assert.equal(want.backend, "interp");
    assertClose(r.mean, want.mean, 1e-5, "mean");
    for (const [type, p] of types) assertClose(p.mean, want.per_type[type].mean, 1e-5, type);

    // the router reads the question: the types route differently, so the picture has a panel per type
    assert.ok(r.types_differ && r.max_type_difference > 1e-6);
    const { width, height } = heatmapLayout(1 + types.length, r.llm_layers.length, r.vit_layers.length, { subtitleLines: 2 });
    assert.deepEqual(await pngSize(join(work, "gpu", "router.png")), [width, height]);
  });

  test("a model without a router (MemVP, concat) is refused with what it lacks, exit 1", () => {
    for (const [name, fusion] of [
      ["TinyVQAMemVP", "`memvp` (MemVP)"],
      ["TinyVQAConcat", "`concat` (ConcatPrefix)"],
    ]) {
      const r = dehvf(["inspect", "router", MICRO, "-m", name, "--checkpoint", join(work, "nowhere"), "--data", data]);
      assert.equal(r.code, 1, r.err);
      assert.ok(r.err.includes(`model \`${name}\` has no router: none of its fusions (${fusion}`), r.err);
      assert.match(r.err, /taps its mixing weights over the ViT layers as `alpha`/);
      assert.doesNotMatch(r.err, /internal error|\n\s+at /);
    }
  });

  test('condition "fixed": the learned mixing weights, the same for every question (one panel), over groups of ViT layers', async () => {
    const file = join(work, "fixed.dehvf");
    writeFileSync(
      file,
      `import "std/vit.dehvf"
import "std/llama.dehvf"
import "std/fusion.dehvf"
model Fixed {
  vision   = ViT(image: 56, patch: 14, d: 16, layers: 4, heads: 2, mlp: 32, channels: 1) frozen
  language = Llama(vocab: 128, d: 32, layers: 3, heads: 2, ffn: 48) frozen
  fusion dehvf = DEHVF(vision_layers: vision.layers, d_vision: vision.d, d: language.d, targets: language.layers,
                       t: 8, router_hidden: 8, proj_hidden: 8, slots: 16, condition: "fixed", groups: 2) {
    target   language.layer[*].memory
    features vision.layer[*].out
    hidden   language.layer[l].ffn_in
    mask     prompt_mask
  }
  forward(image: [B, 1, 56, 56], tokens: [B, T] int, prompt_mask: [B, T]) -> [B, T, 128] {
    vision(image)
    return language(tokens)
  }
}
train finetune { task = "vqa" }
`,
    );
    const model = elaborate(loadProgram(file), "Fixed");
    const logits = [
      [0.5, -1],
      [2, 0],
      [0, 0],
    ];
    const params = initAllParams(model, 0);
    params.set("dehvf.fixed_logits", tensor([3, 2], logits.flat()));
    const weights = join(work, "fixed.safetensors");
    await saveTensors(weights, new Map(storedParams(model.params).map((p) => [p.name, params.get(p.name)!])), { stage: "finetune", step: "0" });
    const out = join(work, "fixed");
    // the device when there is one, else the interpreter: the weights are the same either way
    const r = dehvf([
      "inspect",
      "router",
      file,
      "--checkpoint",
      weights,
      "--data",
      data,
      "--problems",
      "20",
      "-o",
      out,
      ...(gpuSkip ? ["--backend", "interp"] : []),
    ]);
    assert.equal(r.code, 0, r.err + r.out);
    const report = readReport(out);
    assert.deepEqual(report.vit_layers, ["0–1", "2–3"]);
    assert.deepEqual(report.llm_layers, ["language.layer.0", "language.layer.1", "language.layer.2"]);
    const softmax = (row: number[]) => row.map((x) => Math.exp(x) / row.reduce((a, y) => a + Math.exp(y), 0));
    assertClose(report.mean, logits.map(softmax), 1e-6, "fixed mean");
    assert.equal(report.types_differ, false);
    assert.equal(report.fusion.args.condition, "fixed");
    const { width, height } = heatmapLayout(1, 3, 2, { subtitleLines: 3 });
    assert.deepEqual(await pngSize(join(out, "router.png")), [width, height]);
  });
});
