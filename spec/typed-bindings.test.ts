/**
 * `dehvf compile --emit ts`: the generated module type-checks under strict (and rejects
 * misuse), runs in Node on the WebGPU device from its own safetensors file, and agrees with
 * the float64 interpreter: the forward's logits and router taps, and greedy generation
 * against the KV-cache decoder's.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { withTapOutputs } from "../compiler/tap-outputs.ts";
import { tensor, type Tensor } from "../compiler/tensor.ts";
import { generate } from "../generate/generate.ts";
import { loadProgram } from "../grammar/modules.ts";
import { decodeSafetensors } from "../io/safetensors-format.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { InterpDecoder } from "../runtime/decoder.ts";
import { nodePlatform } from "../runtime/node-platform.ts";
import type { Platform } from "../runtime/platform.ts";
import type { Gpu } from "../runtime/device.ts";
import { initAllParams, runInterp } from "../runtime/interp-backend.ts";
import { roundedToHalf } from "../runtime/half.ts";
import { ModelInputError } from "../runtime/loaded-model.ts";
import { emitTs } from "../bin/commands/emit-ts.ts";
import { loadTokenizer } from "../data/tokenizers/load.ts";
import { rng } from "../util/rng.ts";
import { useGpu } from "./gpu-check.ts";
import { STORIES260K } from "./shared-fixtures.ts";

const MODEL_FILE = "models/tiny-vqa.dehvf";
// inside the package, so the module's `dehvf/runtime` import resolves to this checkout
const DIR = "out/test-bindings";
const T = 24;
const TSC = resolve("node_modules/.bin/tsc");

/** What the test uses of the generated module (its own types are checked by tsc in the first test). */
interface Generated {
  readonly parameters: readonly { readonly name: string; readonly f16: boolean }[];
  readonly TinyVQA: {
    open(platform: Platform, weights: string, opts?: { f16?: boolean }): ReturnType<Generated["TinyVQA"]["load"]>;
    load(
      device: Gpu,
      weights: Uint8Array,
      opts?: { f16?: boolean },
    ): Promise<{
      readonly weights: "f16" | "f32";
      forward(x: Record<string, Float32Array | Int32Array>): Promise<{ out: Float32Array; taps: { "dehvf.alpha": readonly Float32Array[] } }>;
      generate(prompt: readonly number[], inputs: { image: Float32Array }, opts: { maxTokens: number }): Promise<number[]>;
      destroy(): void;
    }>;
  };
}
let mod: Generated;
const fixture = useGpu();
let params: Map<string, Tensor>;

/** A trained stage's weights as `dehvf train` stores them: every parameter, the fusion's trained (seeded noise here). */
async function writeCheckpoint(file: string): Promise<Map<string, Float32Array>> {
  const r = rng(3);
  const model = elaborate(loadProgram(MODEL_FILE), "TinyVQA");
  const trained = new Map(
    model.params
      .filter((p) => p.trainable)
      .map((p) => [p.name, Float32Array.from({ length: p.shape.reduce((a, b) => a * b, 1) }, () => (r() - 0.5) * 0.2)] as const),
  );
  const all = initAllParams(model, 5);
  await writeSafetensors(file, new Map([...all].map(([n, t]) => [n, { shape: t.shape, data: trained.get(n) ?? Float32Array.from(t.data) }])));
  return trained;
}

let trained: Map<string, Float32Array>;

before(async () => {
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  trained = await writeCheckpoint(join(DIR, "trained.safetensors"));
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "bin/dehvf.ts",
      "compile",
      MODEL_FILE,
      "--emit",
      "ts",
      "-o",
      DIR,
      "--tap",
      "dehvf.alpha",
      "--seq",
      String(T),
      "--checkpoint",
      join(DIR, "trained.safetensors"),
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /wrote out\/test-bindings\/TinyVQA\.ts .* and out\/test-bindings\/TinyVQA\.weights\.safetensors \(121 parameters, trained ones from /);
  mod = (await import(pathToFileURL(resolve(DIR, "TinyVQA.ts")).href)) as Generated;
  params = new Map(
    [...decodeSafetensors(readFileSync(join(DIR, "TinyVQA.weights.safetensors")))].map(([n, t]) => [n, { shape: t.shape, data: Float64Array.from(t.data) }]),
  );
  // the weights file holds the checkpoint's trained values
  for (const [n, v] of trained) assert.deepEqual(Array.from(params.get(n)!.data), Array.from(v), n);
});

/** tsc's exit status and output for `code` importing the generated module, under the project's strict options. */
function typeCheck(name: string, code: string): { status: number | null; out: string } {
  writeFileSync(join(DIR, `${name}.ts`), code);
  writeFileSync(
    join(DIR, `${name}.tsconfig.json`),
    JSON.stringify({ extends: "../../tsconfig.json", compilerOptions: { strict: true }, include: [`${name}.ts`] }),
  );
  const r = spawnSync(TSC, ["--noEmit", "-p", join(DIR, `${name}.tsconfig.json`)], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

test("the generated module type-checks under strict, with its inputs, outputs and dims as types", () => {
  const ok = typeCheck(
    "use-ok",
    [
      'import { dims, imageForm, parameters, TinyVQA, type TinyVQAInputs, type TinyVQAOutputs } from "./TinyVQA.ts";',
      "export async function use(device: GPUDevice, weights: Uint8Array): Promise<number> {",
      "  const m = await TinyVQA.load(device, weights);",
      "  const x: TinyVQAInputs = { image: new Float32Array(56 * 56), tokens: new Int32Array(dims.T), prompt_mask: new Float32Array(dims.T) };",
      "  const y: TinyVQAOutputs = await m.forward(x);",
      "  const alpha: readonly Float32Array[] = y.taps['dehvf.alpha'];",
      "  const ids: number[] = await m.generate([1, 5], { image: x.image }, { maxTokens: 3, stop: [2] });",
      "  m.destroy();",
      "  return y.out.length + alpha.length + ids.length + parameters.length + imageForm.mean[0];",
      "}",
    ].join("\n"),
  );
  assert.equal(ok.status, 0, ok.out);
  // the types say what goes in: token ids are not floats, and every input is required
  const bad = typeCheck(
    "use-bad",
    [
      'import { TinyVQA } from "./TinyVQA.ts";',
      "export async function use(m: TinyVQA): Promise<void> {",
      "  await m.forward({ image: new Float32Array(1), tokens: new Float32Array(1), prompt_mask: new Float32Array(1) });",
      "  await m.forward({ image: new Float32Array(1), tokens: new Int32Array(1) });",
      "}",
    ].join("\n"),
  );
  assert.notEqual(bad.status, 0);
  assert.match(bad.out, /use-bad\.ts\(3,.*Float32Array.*Int32Array|use-bad\.ts\(3,.*tokens/s);
  assert.match(bad.out, /use-bad\.ts\(4,.*prompt_mask/s);
});

const inputs = () => {
  const r = rng(7);
  const promptLength = 9;
  return {
    image: Float32Array.from({ length: 56 * 56 }, () => r() * 2 - 1),
    tokens: Int32Array.from({ length: T }, (_, i) => (i < promptLength ? 4 + Math.floor(r() * 120) : 0)),
    prompt_mask: Float32Array.from({ length: T }, (_, i) => (i < promptLength ? 1 : 0)),
  };
};

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

for (const f16 of [false, true])
  test(`the module runs in Node from its weights file and matches the interpreter (logits and router taps), ${f16 ? "f16" : "f32"} weights`, async (t) => {
    const gpu = fixture.device(t);
    if (!gpu) return;
    if (f16 && !gpu.hasF16) return t.skip("this adapter has no shader-f16");
    const m = await mod.TinyVQA.load(gpu, readFileSync(join(DIR, "TinyVQA.weights.safetensors")), { f16 });
    try {
      assert.equal(m.weights, f16 ? "f16" : "f32");
      const x = inputs();
      const y = await m.forward(x);
      const { model } = withTapOutputs(elaborate(loadProgram(MODEL_FILE), "TinyVQA"), ["dehvf.alpha"]);
      const feed = new Map<string, Tensor>([
        ["image", tensor([1, 1, 56, 56], Array.from(x.image))],
        ["tokens", tensor([1, T], Array.from(x.tokens))],
        ["prompt_mask", tensor([1, T], Array.from(x.prompt_mask))],
      ]);
      // f16 weights: the interpreter computes with the values the device holds
      const halfNames = new Set(mod.parameters.filter((p) => p.f16).map((p) => p.name));
      assert.ok(!f16 || halfNames.size > 50, `only ${halfNames.size} parameters stored as f16`);
      const seen = f16 ? new Map([...params].map(([n, v]) => [n, halfNames.has(n) ? roundedToHalf(v) : v])) : params;
      const [out, ...alphas] = runInterp(model, seen, { seed: 0, dims: { B: 1, T }, inputs: feed });
      const logitsErr = maxAbs(y.out, out.data);
      const alphaErr = Math.max(...alphas.map((a, l) => maxAbs(y.taps["dehvf.alpha"][l], a.data)));
      t.diagnostic(
        `max |Δ| vs the interpreter: logits ${logitsErr.toExponential(1)} (|logit| ≤ ${Math.max(...out.data.map(Math.abs)).toFixed(1)}), router weights ${alphaErr.toExponential(1)}`,
      );
      assert.equal(y.taps["dehvf.alpha"].length, 4);
      assert.ok(logitsErr < 1e-5, `logits differ by ${logitsErr}`);
      assert.ok(alphaErr < 1e-5, `router weights differ by ${alphaErr}`);

      // what does not fit the compiled model is refused with the input's name
      await assert.rejects(
        m.forward({ ...x, image: new Float32Array(10) }),
        (e: Error) => e instanceof ModelInputError && /image.*10 values.*3136/.test(e.message),
      );
    } finally {
      m.destroy();
    }
  });

test("generate() matches the interpreter's KV-cache decoding, greedy", async (t) => {
  const gpu = fixture.device(t);
  if (!gpu) return;
  const m = await mod.TinyVQA.load(gpu, readFileSync(join(DIR, "TinyVQA.weights.safetensors")));
  try {
    const x = inputs();
    const prompt = Array.from(x.tokens.slice(0, 9));
    const ours = await m.generate(prompt, { image: x.image }, { maxTokens: 6 });
    const models = generationModels(loadProgram(MODEL_FILE), "TinyVQA");
    const decoder = new InterpDecoder(models, params, { batch: 1, context: prompt.length + 6 });
    const extra = new Map<string, Tensor>([
      ["image", tensor([1, 1, 56, 56], Array.from(x.image))],
      ["prompt_mask", tensor([1, prompt.length], new Array(prompt.length).fill(1))],
    ]);
    const reference: number[] = [];
    for await (const id of generate(decoder, prompt, { maxTokens: 6 }, extra)) reference.push(id);
    t.diagnostic(`generated ${ours.join(" ")}; interpreter ${reference.join(" ")}`);
    assert.deepEqual(ours, reference);
  } finally {
    m.destroy();
  }
});

test("open() takes the device and the weights file from a platform (Node: Dawn and a path)", async (t) => {
  const gpu = fixture.device(t);
  if (!gpu) return;
  const m = await mod.TinyVQA.open(nodePlatform, join(DIR, "TinyVQA.weights.safetensors"), { f16: false });
  try {
    const y = await m.forward(inputs());
    const viaLoad = await mod.TinyVQA.load(gpu, readFileSync(join(DIR, "TinyVQA.weights.safetensors")), { f16: false });
    try {
      assert.deepEqual(Array.from(y.out), Array.from((await viaLoad.forward(inputs())).out));
    } finally {
      viaLoad.destroy();
    }
  } finally {
    m.destroy();
  }
});

test("a weights file without a tensor the plan reads, with a wrong shape or a non-finite value is refused by name", async (t) => {
  const gpu = fixture.device(t);
  if (!gpu) return;
  const file = join(DIR, "partial.safetensors");
  await writeSafetensors(file, { "vision.cls": { shape: [64], data: new Float32Array(64) } });
  await assert.rejects(
    mod.TinyVQA.load(gpu, readFileSync(file)),
    (e: Error) => e instanceof ModelInputError && /has no tensor `language\.embed`/.test(e.message),
  );
  // the trained weights with one tensor changed
  const good = [...params].map(([n, w]) => [n, { shape: w.shape, data: Float32Array.from(w.data) }] as const);
  const changed = async (name: string, to: { shape: readonly number[]; data: Float32Array }) => {
    const f = join(DIR, "changed.safetensors");
    await writeSafetensors(f, new Map(good.map(([n, w]) => [n, n === name ? to : w])));
    return mod.TinyVQA.load(gpu, readFileSync(f));
  };
  await assert.rejects(
    changed("language.embed", { shape: [64, 256], data: new Float32Array(64 * 256) }),
    (e: Error) => e instanceof ModelInputError && /`language\.embed` has shape \[64, 256\], TinyVQA expects \[128, 128\]/.test(e.message),
  );
  const nan = Float32Array.from(params.get("dehvf.proj.fc1.w")!.data);
  nan[5] = Number.NaN;
  await assert.rejects(
    changed("dehvf.proj.fc1.w", { shape: [64, 64], data: nan }),
    (e: Error) => e instanceof ModelInputError && /`dehvf\.proj\.fc1\.w` holds NaN at element 5/.test(e.message),
  );
});

test("a real pretrained model as a module: stories260K's generate() prints llama2.c's own greedy text", async (t) => {
  if (!fixture.device(t)) return;
  const stories = STORIES260K;
  const dir = join(DIR, "stories");
  mkdirSync(dir, { recursive: true });
  const dehvf = (args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "bin/dehvf.ts", ...args], { encoding: "utf8" });
  const imported = dehvf(["import", join(stories, "stories260K.bin"), "--tokenizer", join(stories, "tok512.bin"), "-o", join(dir, "s.dehvf")]);
  assert.equal(imported.status, 0, imported.stderr);
  // BOS and 200 new tokens: a window of 201
  const compiled = dehvf(["compile", join(dir, "s.dehvf"), "--emit", "ts", "-o", dir, "--seq", "201"]);
  assert.equal(compiled.status, 0, compiled.stderr);
  const gen = (await import(pathToFileURL(resolve(dir, "Stories260K.ts")).href)) as {
    Stories260K: {
      open(
        p: Platform,
        w: string,
      ): Promise<{ weights: string; generate(p: number[], i: object, o: { maxTokens: number }): Promise<number[]>; destroy(): void }>;
    };
  };
  const m = await gen.Stories260K.open(nodePlatform, join(dir, "Stories260K.weights.safetensors"));
  try {
    const ids = await m.generate([1], {}, { maxTokens: 200 });
    const tok = await loadTokenizer(resolve(stories, "tok512.bin"));
    const text = tok.streamDecoder({ after: [1] });
    const out = ids.map((id) => text.push(id)).join("") + text.flush();
    t.diagnostic(`${m.weights} weights, ${ids.length} tokens`);
    assert.equal(`${out}\n`, readFileSync(join(stories, "expected-greedy-200.txt"), "utf8") + "\n");
  } finally {
    m.destroy();
  }
});

for (const name of ["TinyVQAMemVP", "TinyVQAConcat"])
  test(`${name} as a module: generate() matches the interpreter's decoder (${name === "TinyVQAConcat" ? "64 visual tokens before the text" : "one ViT layer in every FFN"})`, async (t) => {
    const gpu = fixture.device(t);
    if (!gpu) return;
    const dir = join(DIR, name);
    await emitTs(MODEL_FILE, { model: name, out: dir, taps: [], dims: { batch: 1, seq: 16 }, command: "test" });
    const gen = (await import(pathToFileURL(resolve(dir, `${name}.ts`)).href)) as Record<
      string,
      { load(g: Gpu, w: Uint8Array, o: { f16: boolean }): Promise<{ generate(p: number[], i: object, o: object): Promise<number[]>; destroy(): void }> }
    >;
    const bytes = readFileSync(join(dir, `${name}.weights.safetensors`));
    const m = await gen[name].load(gpu, bytes, { f16: false });
    try {
      const image = inputs().image;
      const prompt = [1, 20, 33, 47, 51, 60, 12];
      const ours = await m.generate(prompt, { image }, { maxTokens: 5, bos: 1 });
      const weights = new Map([...decodeSafetensors(bytes)].map(([n, w]) => [n, { shape: w.shape, data: Float64Array.from(w.data) }]));
      const models = generationModels(loadProgram(MODEL_FILE), name);
      const decoder = new InterpDecoder(models, weights, { batch: 1, context: 64 + 16 });
      const reference: number[] = [];
      for await (const id of generate(decoder, prompt, { maxTokens: 5 }, new Map([["image", tensor([1, 1, 56, 56], Array.from(image))]]))) reference.push(id);
      t.diagnostic(`generated ${ours.join(" ")}; interpreter ${reference.join(" ")}`);
      assert.deepEqual(ours, reference);
    } finally {
      m.destroy();
    }
  });

test("--emit ts refuses what it cannot do, exit 1 with why", () => {
  for (const [args, why] of [
    [["--emit", "ts"], /--emit ts writes files: pass -o DIR/],
    [["--emit", "ts", "-o", join(DIR, "x"), "--train"], /--emit ts emits the forward: leave out --train/],
    [["--emit", "ts", "-o", join(DIR, "x"), "--tap", "dehvf.nope"], /has no tap `dehvf\.nope`/],
    [["-o", join(DIR, "x")], /-o, --tap and --checkpoint go with --emit ts/],
  ] as const) {
    const r = spawnSync(process.execPath, ["--import", "tsx", "bin/dehvf.ts", "compile", MODEL_FILE, ...args], { encoding: "utf8" });
    assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
});
