import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";

/** Runs the real CLI entry, as `npx dehvf` does. */
function dehvf(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** The number in a table row like `  vision (ViT) frozen   303,179,776   0`. */
function rowTotals(out: string, label: RegExp): [number, number] {
  const line = out.split("\n").find((l) => label.test(l));
  assert.ok(line, `no row matching ${label}`);
  const nums = [...line.matchAll(/(\d[\d,]*)\s*/g)].map((m) => Number(m[1].replace(/,/g, "")));
  return [nums[nums.length - 2], nums[nums.length - 1]];
}

describe("dehvf check", () => {
  test("MemVP at paper size: trainable 3,870,848 with the published breakdown", () => {
    const r = dehvf("check", "models/clip-l14-llama7b-memvp.dehvf");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(rowTotals(r.out, /^\s+vision \(ViT\)/), [303_179_776, 0]);
    assert.deepEqual(rowTotals(r.out, /^\s+language \(Llama\)/), [6_738_415_616, 0]);
    assert.deepEqual(rowTotals(r.out, /^\s+proj \(Projector\)/), [659_584, 659_584]);
    assert.deepEqual(rowTotals(r.out, /^\s+memory \(FfnMemory\)/), [2_621_440, 2_621_440]);
    assert.deepEqual(rowTotals(r.out, /^\s+adapters\[0\.\.23\] ×24/), [589_824, 589_824]);
    assert.match(r.out, /trainable: 3,870,848 /);
    assert.match(r.out, /memvp\.memory\.p_k\s+\[320, 4096\]/);
    assert.match(r.out, /image\s+f32\[B, 3, 224, 224\]/);
    assert.match(r.out, /out\s+f32\[B, T, 32000\]/);
  });

  test("DEHVF at paper size: backbones match CLIP ViT-L/14 and LLaMA-7B, only the fuser trains", () => {
    const r = dehvf("check", "models/clip-l14-llama7b-dehvf.dehvf");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(rowTotals(r.out, /^\s+vision \(ViT\)/), [303_179_776, 0]);
    assert.deepEqual(rowTotals(r.out, /^\s+language \(Llama\)/), [6_738_415_616, 0]);
    const [total, trainable] = rowTotals(r.out, /^\s+dehvf \(DEHVF\)/);
    assert.equal(total, trainable);
    assert.match(r.out, new RegExp(`trainable: ${trainable.toLocaleString("en-US")} `));
    assert.match(r.out, /dehvf = DEHVF → 32 sites/);
  });
});

describe("dehvf compile", () => {
  test("--emit graph prints SSA lines with DSL locations", () => {
    const r = dehvf("compile", "models/tiny-vqa.dehvf", "--emit", "graph");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^%0 = /m);
    assert.match(r.out, /= matmul %\d+, %\d+ : f32\[B, T, 64\]  # models\/std\/fusion\.dehvf:\d+:\d+/);
    assert.match(r.out, /^return out = %\d+$/m);
  });

  test("--dump-after names a stage, and an unknown stage is a clean error", () => {
    const ok = dehvf("compile", "models/tiny-vqa.dehvf", "--dump-after", "elaborate");
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /# ---- after elaborate ----/);
    const bad = dehvf("compile", "models/tiny-vqa.dehvf", "--dump-after", "fuse-everything");
    assert.equal(bad.code, 1);
    assert.match(bad.err, /unknown stage "fuse-everything"/);
  });
});

describe("dehvf run", () => {
  test("interp backend: output shape and a checksum that repeats for a seed", () => {
    const a = dehvf("run", "models/tiny-vqa.dehvf", "--backend", "interp", "--seed", "3", "--batch", "1", "--seq", "4");
    const b = dehvf("run", "models/tiny-vqa.dehvf", "--backend", "interp", "--seed", "3", "--batch", "1", "--seq", "4");
    assert.equal(a.code, 0, a.err);
    const line = (s: string) => s.split("\n").find((l) => l.startsWith("output"))!;
    assert.match(line(a.out), /output out\s+\[1, 4, 128\]/);
    assert.equal(line(a.out), line(b.out));
  });

  test("the concat model's output is longer by the 64 visual tokens", () => {
    const r = dehvf("run", "models/tiny-vqa.dehvf", "-m", "TinyVQAConcat", "--batch", "1", "--seq", "3");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /output out\s+\[1, 67, 128\]/);
  });

  test("an unknown model name is a located, suggestive error", () => {
    const r = dehvf("run", "models/tiny-vqa.dehvf", "-m", "TinyVQAMemVp");
    assert.equal(r.code, 1);
    assert.match(r.err, /did you mean `TinyVQAMemVP`\?/);
    assert.doesNotMatch(r.err, /\n\s+at /);
  });
});
