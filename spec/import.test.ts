import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { elaborate } from "../compiler/elaborate.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { loadProgram } from "../grammar/modules.ts";
import { openCatalog } from "../io/checkpoints/catalog.ts";
import { applyTransform } from "../io/checkpoints/transforms.ts";
import { UserFacingError } from "../util/user-facing-error.ts";
import { encodeHeader, writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { acquireGpu, NoAdapterError } from "../runtime/device.ts";
import { initAllParams, loadAllParams, runInterp } from "../runtime/interp-backend.ts";
import { runWebgpu } from "../runtime/webgpu-backend.ts";
import { fcRuns } from "./fc-runs.ts";
import { llamaConfig, writeHf } from "./hf-writer.ts";
import { readLlama2c, referenceLogits } from "./llama2c-reference.ts";
import { STORIES260K } from "./shared-fixtures.ts";

const FIXTURES = STORIES260K;
const BIN = join(FIXTURES, "stories260K.bin");
const TOK = join(FIXTURES, "tok512.bin");
const TMP = mkdtempSync(join(tmpdir(), "dehvf-import-"));
after(() => rmSync(TMP, { recursive: true, force: true }));

function dehvf(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** The model file's logits for `tokens` (one row), through the float64 interpreter. */
async function logits(file: string, tokens: readonly number[]): Promise<Float64Array[]> {
  const m = elaborate(loadProgram(file));
  const params = await loadAllParams(m, 0);
  const input: Tensor = { shape: [1, tokens.length], data: Float64Array.from(tokens) };
  const [out] = runInterp(m, params, { seed: 0, dims: { B: 1, T: tokens.length }, inputs: new Map([["tokens", input]]) });
  const V = out.shape[2];
  return tokens.map((_, t) => out.data.slice(t * V, (t + 1) * V));
}

function maxDiff(a: readonly Float64Array[], b: readonly Float64Array[]): { diff: number; mag: number } {
  let diff = 0;
  let mag = 0;
  a.forEach((row, t) =>
    row.forEach((x, i) => {
      diff = Math.max(diff, Math.abs(x - b[t][i]));
      mag = Math.max(mag, Math.abs(x));
    }),
  );
  return { diff, mag };
}

/** from BOS, then a few ids of the 512 */
const TOKENS = [1, 403, 407, 261, 80, 300];

describe("dehvf import: stories260K (llama2.c .bin)", () => {
  const model = join(TMP, "stories", "stories.dehvf");
  const ref = readLlama2c(BIN);
  const expected = referenceLogits(ref, TOKENS);

  test("the reference forward itself reproduces llama2.c's greedy text from BOS (its first 16 tokens)", () => {
    const tok = readFileSync(TOK);
    const pieces: string[] = [];
    for (let i = 0, at = 4; i < ref.vocab; i++) {
      const len = tok.readInt32LE(at + 4);
      pieces.push(tok.subarray(at + 8, at + 8 + len).toString("latin1"));
      at += 8 + len;
    }
    const ids = [1];
    for (let s = 0; s < 16; s++) {
      const last = referenceLogits(ref, ids).at(-1)!;
      ids.push(last.indexOf(Math.max(...last)));
    }
    const text = ids
      .slice(1)
      .map((id, i) => (i === 0 ? pieces[id].replace(/^ /, "") : pieces[id]))
      .join("");
    assert.ok(readFileSync(join(FIXTURES, "expected-greedy-200.txt"), "latin1").startsWith(text), text);
  });

  test("imports, and the written file checks and names its weights and tokenizer", () => {
    mkdirSync(join(TMP, "stories"), { recursive: true });
    const r = dehvf("import", BIN, "--tokenizer", TOK, "-o", model);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /47 tensors, 260,032 values/);
    const c = dehvf("check", model);
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /language \(Llama\) frozen\s+260,032\s+0/);
    assert.match(c.out, /language\s+from "?\.\.\/\.\.\/.*stories260K\.bin"? \(llama2c\): 47 tensors/);
    assert.match(c.out, /layer\.\*\.attn\.wq\.w ×5\s+← layers\.\{l\}\.attention\.wq\.weight \(rope-interleaved-to-half, 8 heads\)/);
    assert.match(c.out, /layer\.\*\.attn\.wk\.w ×5\s+← layers\.\{l\}\.attention\.wk\.weight \(rope-interleaved-to-half, 4 heads\)/);
    assert.match(c.out, /layer\.\*\.ffn\.gate ×5\s+← layers\.\{l\}\.feed_forward\.w1\.weight/);
    assert.match(c.out, /tokenizer: .*tok512\.bin \(512 tokens\)/);
  });

  test("the interpreter's logits from BOS match an independent float64 forward of the .bin (interleaved RoPE)", async () => {
    const got = await logits(model, TOKENS);
    const { diff, mag } = maxDiff(got, expected);
    assert.ok(mag > 1, `logits too small to compare (${mag})`);
    // both sides compute in float64 from the same float32 weights: only summation order differs
    assert.ok(diff < 1e-9 * mag, `max |diff| ${diff} (max |logit| ${mag})`);
  });

  test("on the WebGPU device, the checkpoint streamed as float32 (never float64 on the host) gives the same logits", async (t) => {
    const m = elaborate(loadProgram(model));
    let gpu;
    try {
      gpu = await acquireGpu();
    } catch (e) {
      if (e instanceof NoAdapterError) return t.skip("no WebGPU adapter");
      throw e;
    }
    try {
      const params = initAllParams(m, 0);
      assert.equal(params.size, 0, "every parameter comes from the checkpoint");
      const input: Tensor = { shape: [1, TOKENS.length], data: Float64Array.from(TOKENS) };
      const r = await runWebgpu(gpu, m, params, new Map([["tokens", input]]), { B: 1, T: TOKENS.length });
      const V = ref.vocab;
      const got = TOKENS.map((_, i) => r.outputs[0].data.slice(i * V, (i + 1) * V));
      const { diff, mag } = maxDiff(got, expected);
      assert.ok(diff < 1e-4 * mag, `max |diff| ${diff} (max |logit| ${mag})`);
    } finally {
      gpu.destroy();
    }
  });

  test("the same weights as a sharded HF LlamaForCausalLM directory (F32, q/k permuted) give the same logits", async () => {
    const dir = join(TMP, "hf-llama");
    await writeHf(dir, ref, { shards: 2 });
    const file = join(TMP, "hf-llama.dehvf");
    const r = dehvf("import", dir, "-o", file, "-m", "Stories");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /model Stories, language = Llama .*\(hf-llama\): 47 tensors/);
    const { diff, mag } = maxDiff(await logits(file, TOKENS), expected);
    assert.ok(diff < 1e-9 * mag, `max |diff| ${diff}`);
  });

  test("as a Qwen2ForCausalLM (q/k/v biases, here zero) with an untied lm_head: the same logits", async () => {
    const dir = join(TMP, "hf-qwen2");
    const kvDim = (ref.kvHeads * ref.dim) / ref.heads;
    const extra: Record<string, Float32Array> = { "lm_head.weight": ref.w.token_embedding.slice() };
    for (let l = 0; l < ref.layers; l++)
      for (const [n, size] of [
        ["q", ref.dim],
        ["k", kvDim],
        ["v", kvDim],
      ] as const)
        extra[`model.layers.${l}.self_attn.${n}_proj.bias`] = new Float32Array(size);
    await writeHf(dir, ref, { config: { architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: false }, extra });
    const file = join(TMP, "hf-qwen2.dehvf");
    const r = dehvf("import", dir, "-o", file);
    assert.equal(r.code, 0, r.err);
    assert.match(readFileSync(file, "utf8"), /tie_embeddings: false, qkv_bias: true\) frozen from "hf-qwen2" as hf-qwen2/);
    assert.match(r.out, /\(hf-qwen2\): 63 tensors/);
    const { diff, mag } = maxDiff(await logits(file, TOKENS), expected);
    assert.ok(diff < 1e-9 * mag, `max |diff| ${diff}`);
  });

  test("dehvf's own safetensors (parameter paths as names, detected by its metadata) give the same logits", async () => {
    const m = elaborate(loadProgram(model));
    const params = await loadAllParams(m, 0);
    const dir = join(TMP, "own");
    mkdirSync(dir, { recursive: true });
    await writeSafetensors(join(dir, "final.safetensors"), new Map([...params].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data) }])), {
      stage: "pretrain",
      model: "Stories260K",
    });
    const file = join(dir, "own.dehvf");
    const text = readFileSync(model, "utf8")
      .replace(/from "[^"]*" as llama2c/, 'from "final.safetensors"')
      .replace(/tokenizer "[^"]*"\n/, "");
    writeFileSync(file, text);
    const c = dehvf("check", file);
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /from final\.safetensors \(dehvf\): 47 tensors/);
    assert.match(c.out, /layer\.\*\.attn\.wq\.w ×5\s+← language\.layer\.\{l\}\.attn\.wq\.w\n/);
    const { diff, mag } = maxDiff(await logits(file, TOKENS), expected);
    assert.ok(diff < 1e-9 * mag, `max |diff| ${diff}`);
  });

  test("a BF16 copy imports and runs, its logits close to float32's", async () => {
    const dir = join(TMP, "hf-bf16");
    await writeHf(dir, ref, { dtype: "BF16" });
    const file = join(TMP, "hf-bf16.dehvf");
    const r = dehvf("import", dir, "-o", file);
    assert.equal(r.code, 0, r.err);
    const got = await logits(file, TOKENS);
    const { diff, mag } = maxDiff(got, expected);
    assert.ok(diff > 0 && diff < 0.05 * mag, `max |diff| ${diff} of max |logit| ${mag}`);
    // the greedy choice after BOS is unchanged
    const argmax = (row: Float64Array) => row.indexOf(Math.max(...row));
    assert.equal(argmax(got[0]), argmax(expected[0]));
  });
});

describe("rope-interleaved-to-half", () => {
  /** RoPE at position `pos` on one head vector: pairs (2i, 2i+1) when interleaved, (i, i+hd/2) in rotate_half form. */
  const rope = (x: number[], pos: number, interleaved: boolean): number[] => {
    const hd = x.length;
    const out = [...x];
    for (let i = 0; i < hd / 2; i++) {
      const ang = pos / 10000 ** ((2 * i) / hd);
      const [a, b] = interleaved ? [2 * i, 2 * i + 1] : [i, i + hd / 2];
      out[a] = x[a] * Math.cos(ang) - x[b] * Math.sin(ang);
      out[b] = x[a] * Math.sin(ang) + x[b] * Math.cos(ang);
    }
    return out;
  };
  test("permuted rows under rotate_half RoPE give the same q·k as the original rows under interleaved RoPE", () => {
    const arb = fc.record({
      heads: fc.integer({ min: 1, max: 3 }),
      half: fc.integer({ min: 1, max: 4 }),
      cols: fc.integer({ min: 1, max: 3 }),
      p: fc.integer({ min: 0, max: 50 }),
      s: fc.integer({ min: 0, max: 50 }),
      seed: fc.integer(),
    });
    fc.assert(
      fc.property(arb, ({ heads, half, cols, p, s, seed }) => {
        const hd = 2 * half;
        const rows = heads * hd;
        let u = seed >>> 0;
        const rand = () => ((u = (Math.imul(u, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
        const wq = Float32Array.from({ length: rows * cols }, rand);
        const wk = Float32Array.from({ length: rows * cols }, rand);
        const x = Array.from({ length: cols }, rand);
        const y = Array.from({ length: cols }, rand);
        const mv = (w: Float32Array, v: number[]) => Array.from({ length: rows }, (_, r) => v.reduce((a, vi, j) => a + w[r * cols + j] * vi, 0));
        const heads1 = (v: number[]) => Array.from({ length: heads }, (_, h) => v.slice(h * hd, (h + 1) * hd));
        const t = { kind: "rope-interleaved-to-half" as const, heads };
        const dots = (q: number[], k: number[], interleaved: boolean) =>
          heads1(q).map((qh, h) => rope(qh, p, interleaved).reduce((a, qi, i) => a + qi * rope(heads1(k)[h], s, interleaved)[i], 0));
        const meta = dots(mv(wq, x), mv(wk, y), true);
        const hf = dots(mv(applyTransform(t, wq, [rows, cols]), x), mv(applyTransform(t, wk, [rows, cols]), y), false);
        meta.forEach((d, h) => assert.ok(Math.abs(d - hf[h]) < 1e-9 * (1 + Math.abs(d)), `head ${h}: ${d} vs ${hf[h]}`));
      }),
      fcRuns(60),
    );
  });
});

/** A tiny random vision tower with Hugging Face's CLIP (or SigLIP) key names and shapes. */
async function writeVision(dir: string, kind: "clip" | "siglip"): Promise<Map<string, Float32Array>> {
  const D = 8;
  const p = 4;
  const N = 4;
  const H = 16;
  let u = kind === "clip" ? 7 : 11;
  const rand = (n: number) => Float32Array.from({ length: n }, () => ((u = (Math.imul(u, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 0.2 - 0.1);
  const t = new Map<string, TensorToWrite>();
  const e = "vision_model.embeddings.";
  t.set(`${e}patch_embedding.weight`, { shape: [D, 3, p, p], data: rand(D * 3 * p * p) });
  if (kind === "clip") {
    t.set(`${e}class_embedding`, { shape: [D], data: rand(D) });
    t.set(`${e}position_embedding.weight`, { shape: [N + 1, D], data: rand((N + 1) * D) });
    t.set("vision_model.pre_layrnorm.weight", { shape: [D], data: rand(D).map((x) => 1 + x) });
    t.set("vision_model.pre_layrnorm.bias", { shape: [D], data: rand(D) });
  } else {
    t.set(`${e}patch_embedding.bias`, { shape: [D], data: rand(D) });
    t.set(`${e}position_embedding.weight`, { shape: [N, D], data: rand(N * D) });
    t.set("vision_model.head.probe", { shape: [1, 1, D], data: rand(D) });
  }
  for (let l = 0; l < 2; l++) {
    const L = `vision_model.encoder.layers.${l}.`;
    for (const n of ["layer_norm1", "layer_norm2"]) {
      t.set(`${L}${n}.weight`, { shape: [D], data: rand(D).map((x) => 1 + x) });
      t.set(`${L}${n}.bias`, { shape: [D], data: rand(D) });
    }
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      t.set(`${L}self_attn.${n}.weight`, { shape: [D, D], data: rand(D * D) });
      t.set(`${L}self_attn.${n}.bias`, { shape: [D], data: rand(D) });
    }
    t.set(`${L}mlp.fc1.weight`, { shape: [H, D], data: rand(H * D) });
    t.set(`${L}mlp.fc1.bias`, { shape: [H], data: rand(H) });
    t.set(`${L}mlp.fc2.weight`, { shape: [D, H], data: rand(D * H) });
    t.set(`${L}mlp.fc2.bias`, { shape: [D], data: rand(D) });
  }
  t.set("vision_model.post_layernorm.weight", { shape: [D], data: rand(D).map((x) => 1 + x) });
  t.set("vision_model.post_layernorm.bias", { shape: [D], data: rand(D) });
  mkdirSync(dir, { recursive: true });
  await writeSafetensors(join(dir, "model.safetensors"), t);
  const arch = kind === "clip" ? "CLIPVisionModel" : "SiglipVisionModel";
  const act = kind === "clip" ? "quick_gelu" : "gelu_pytorch_tanh";
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({
      architectures: [arch],
      hidden_size: D,
      image_size: 8,
      patch_size: p,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      intermediate_size: H,
      num_channels: 3,
      hidden_act: act,
      layer_norm_eps: kind === "clip" ? 1e-5 : 1e-6,
    }),
  );
  return new Map([...t].map(([k, v]) => [k, v.data as Float32Array]));
}

describe("dehvf import: vision towers", () => {
  for (const kind of ["clip", "siglip"] as const) {
    test(`a tiny ${kind === "clip" ? "CLIPVisionModel" : "SiglipVisionModel"} imports into std/vit; its patch embedding of a known image is the convolution`, async () => {
      const dir = join(TMP, kind);
      const w = await writeVision(dir, kind);
      const file = join(TMP, `${kind}.dehvf`);
      const r = dehvf("import", dir, "-o", file);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, kind === "clip" ? /\(hf-clip-vision\): 39 tensors/ : /\(hf-siglip-vision\): 37 tensors/);
      const c = dehvf("check", file);
      assert.equal(c.code, 0, c.err);
      assert.match(c.out, /patch_w\s+← vision_model\.embeddings\.patch_embedding\.weight \(reshape\)/);
      // the whole tower runs
      const m = elaborate(loadProgram(file));
      const params = await loadAllParams(m, 0);
      const [out] = runInterp(m, params, { seed: 0, dims: { B: 1 } });
      assert.deepEqual(out.shape, [1, 8]);
      assert.ok(out.data.every(Number.isFinite));
      // the patch embedding alone, through the imported weights: by hand, conv(image, W) + b
      const probe = join(TMP, `${kind}-patches.dehvf`);
      const args = /vision = (ViT\([^)]*\))/.exec(readFileSync(file, "utf8"))![1];
      writeFileSync(
        probe,
        `import "std/vit.dehvf"\nmodel P {\n  vision = ${args} frozen from "${kind}"\n  forward(image: [B, 3, 8, 8]) -> [B, 4, 8] = patches(image, 4) @ vision.patch_w^T${kind === "siglip" ? " + vision.patch_b" : ""}\n}\n`,
      );
      const pm = elaborate(loadProgram(probe));
      const img = Float64Array.from({ length: 3 * 8 * 8 }, (_, i) => ((i * 37) % 23) / 23 - 0.5);
      const [emb] = runInterp(pm, await loadAllParams(pm, 0), { seed: 0, dims: { B: 1 }, inputs: new Map([["image", { shape: [1, 3, 8, 8], data: img }]]) });
      const W = w.get("vision_model.embeddings.patch_embedding.weight")!;
      const bias = w.get("vision_model.embeddings.patch_embedding.bias");
      for (let py = 0; py < 2; py++)
        for (let px = 0; px < 2; px++)
          for (let o = 0; o < 8; o++) {
            let s = bias ? bias[o] : 0;
            for (let ch = 0; ch < 3; ch++)
              for (let ky = 0; ky < 4; ky++)
                for (let kx = 0; kx < 4; kx++) s += W[((o * 3 + ch) * 4 + ky) * 4 + kx] * img[(ch * 8 + py * 4 + ky) * 8 + px * 4 + kx];
            const got = emb.data[(py * 2 + px) * 8 + o];
            assert.ok(Math.abs(got - s) < 1e-6, `patch (${py}, ${px}) channel ${o}: ${got} vs ${s}`);
          }
    });
  }
});

describe("damaged checkpoints", () => {
  let n = 0;
  const fresh = (ext: string) => join(TMP, `damaged-${n++}${ext}`);
  /** a catalog, or a UserFacingError that names the file: never another exception */
  const openOrRefuse = (file: string) => {
    try {
      openCatalog(file);
    } catch (e) {
      assert.ok(e instanceof UserFacingError, `${(e as Error).stack}`);
      assert.ok((e as Error).message.includes(file), (e as Error).message);
    }
  };
  const bin = readFileSync(BIN);
  test("a llama2.c .bin with a changed header int or cut short", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.nat(bin.length), (field, value, cut) => {
        const b = Buffer.from(bin.subarray(0, Math.max(cut, 1)));
        if (b.length >= 28) b.writeInt32LE(value, 4 * field);
        const file = fresh(".bin");
        writeFileSync(file, b);
        openOrRefuse(file);
      }),
      fcRuns(40),
    );
  });
  test("a safetensors file with damaged header bytes", async () => {
    const good = join(TMP, "good.safetensors");
    await writeSafetensors(
      good,
      new Map([
        ["a.weight", { shape: [4, 2], data: new Float32Array(8) }],
        ["b", { shape: [3], data: new Float32Array(3), dtype: "BF16" }],
      ]),
    );
    const bytes = readFileSync(good);
    fc.assert(
      fc.property(fc.array(fc.record({ at: fc.nat(bytes.length - 1), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }), (edits) => {
        const b = Buffer.from(bytes);
        for (const e of edits) b[e.at] = e.byte;
        const file = fresh(".safetensors");
        writeFileSync(file, b);
        openOrRefuse(file);
      }),
      fcRuns(60),
    );
  });
});

describe("dehvf import and check: bad checkpoints exit 1 naming the file and key", () => {
  const ref = readLlama2c(BIN);
  const fails = (r: { code: number; err: string }, ...patterns: RegExp[]) => {
    assert.equal(r.code, 1, `exit ${r.code}: ${r.err}`);
    for (const p of patterns) assert.match(r.err, p);
  };

  test("unknown architecture", async () => {
    const dir = join(TMP, "gpt2");
    await writeHf(dir, ref, { config: { architectures: ["GPT2LMHeadModel"] } });
    fails(
      dehvf("import", dir, "-o", join(TMP, "gpt2.dehvf")),
      /gpt2\/config\.json \(architectures\)/,
      /GPT2LMHeadModel is not one dehvf can import; known: hf-clip-vision/,
    );
  });

  test("a missing tensor", async () => {
    const dir = join(TMP, "missing-key");
    await writeHf(dir, ref, { drop: "model.layers.3.mlp.up_proj.weight" });
    fails(
      dehvf("import", dir, "-o", join(TMP, "missing.dehvf")),
      /missing-key has no tensor "model\.layers\.3\.mlp\.up_proj\.weight" for parameter `language\.layer\.3\.ffn\.up`/,
    );
  });

  test("a shape that does not fit the config", async () => {
    const dir = join(TMP, "bad-shape");
    await writeHf(dir, ref, { reshape: ["model.norm.weight", [63]] });
    fails(
      dehvf("import", dir, "-o", join(TMP, "shape.dehvf")),
      /model\.safetensors: tensor "model\.norm\.weight" has shape \[63\], the parameter \[64\] \(`language\.norm\.weight`\)/,
    );
  });

  test("a BF16 tensor with an F32 byte length", () => {
    const dir = join(TMP, "bf16-bytes");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "config.json"), llamaConfig(ref));
    const header = encodeHeader([{ name: "model.norm.weight", dtype: "F32", shape: [64], byteLength: 256 }]);
    const text = Buffer.from(header.subarray(8)).toString("utf8").replace('"F32"', '"BF16"');
    const body = Buffer.from(text, "utf8");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(body.length));
    writeFileSync(join(dir, "model.safetensors"), Buffer.concat([len, body, Buffer.alloc(256)]));
    fails(
      dehvf("import", dir, "-o", join(TMP, "bf16.dehvf")),
      /bf16-bytes\/model\.safetensors \(tensor "model\.norm\.weight"\): shape \[64\] × BF16 needs 128 bytes but data_offsets \[0, 256\] span 256/,
    );
  });

  test("a missing checkpoint, on the command line and in a model file (located at the string)", () => {
    fails(dehvf("import", join(TMP, "nowhere.bin"), "-o", join(TMP, "x.dehvf")), /nowhere\.bin: no such file or directory/);
    const file = join(TMP, "missing-file.dehvf");
    writeFileSync(
      file,
      'import "std/llama.dehvf"\nmodel M {\n  language = Llama(vocab: 512, d: 64, layers: 5, heads: 8, ffn: 172) frozen from "nowhere.bin" as llama2c\n  forward(tokens: [B, T] int) -> [B, T, 512] = language(tokens)\n}\n',
    );
    fails(dehvf("check", file), /error\[link\]: cannot find checkpoint "nowhere\.bin"/, /missing-file\.dehvf:3:82/, /\^{13}/);
  });

  test("an unknown family gets a suggestion; a tokenizer outside a model is refused", () => {
    const file = join(TMP, "family.dehvf");
    writeFileSync(
      file,
      `import "std/llama.dehvf"\nblock B {\n  tokenizer "${TOK}"\n  forward(x: [N]) -> [N] = x\n}\nmodel M {\n  language = Llama(vocab: 512, d: 64, layers: 5, heads: 8, ffn: 172) frozen from "${BIN}" as llama2cc\n  forward(tokens: [B, T] int) -> [B, T, 512] = language(tokens)\n}\n`,
    );
    fails(dehvf("check", file), /unknown checkpoint family `llama2cc`/, /did you mean `llama2c`\?/, /a tokenizer belongs in a `model`, not in block `B`/);
  });
});
