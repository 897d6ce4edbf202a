/**
 * Training: the loss and its closed-form gradient, the AdamW step, the learning-rate
 * schedule, train sections, the compiled step on WebGPU against the interpreter, and
 * `dehvf train` / `dehvf eval` end to end on a miniature model and dataset (including a
 * killed-and-resumed run that must match an uninterrupted one step for step).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { gradients } from "../compiler/autodiff.ts";
import { elaborate } from "../compiler/elaborate.ts";
import { interpret } from "../compiler/interpret.ts";
import { rng } from "../util/rng.ts";
import { numel, type Tensor, tensor } from "../compiler/tensor.ts";
import { adamScalars, buildTrainGraph, DEFAULT_OPTIMIZER, maskedCrossEntropy } from "../compiler/train-graph.ts";
import { buildDefaultData } from "../data/build.ts";
import { DehvfError } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";
import { readMetrics } from "../io/metrics-log.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { acquireGpu, type Gpu, NoAdapterError } from "../runtime/device.ts";
import { initAllParams } from "../runtime/interp-backend.ts";
import { Trainer } from "../runtime/trainer.ts";
import { loadMeta } from "../train/checkpoint.ts";
import { learningRate } from "../train/lr-schedule.ts";
import { stagesFor, trainStages } from "../train/stages.ts";
import { GraphKit } from "./graph-model.ts";
import { checkTrainStep } from "./train-check.ts";

const MICRO = "spec/fixtures/train/micro.dehvf";

const randomTensor = (shape: number[], seed: number, lo = -2, hi = 2): Tensor => {
  const r = rng(seed);
  return tensor(
    shape,
    Array.from({ length: numel(shape) }, () => Math.fround(lo + (hi - lo) * r())),
  );
};

describe("loss", () => {
  test("masked cross-entropy: value by hand, and its closed-form gradient equals reverse mode", () => {
    const kit = new GraphKit();
    const logits = kit.param("logits", [2, 3, 5]);
    const targets = kit.input("targets", [2, 3], "i32");
    const mask = kit.input("mask", [2, 3]);
    const { loss, dlogits } = maskedCrossEntropy(kit.t, logits, targets, mask);
    const [auto] = gradients(kit.g, loss, [logits]);
    const L = randomTensor([2, 3, 5], 1);
    const tg = tensor([2, 3], [0, 4, 2, 1, 3, 3]);
    const m = tensor([2, 3], [1, 0, 1, 1, 1, 0]);
    const [lv, closed, byAutodiff] = interpret([loss, dlogits, auto], {
      dims: {},
      inputs: new Map([
        ["targets", tg],
        ["mask", m],
      ]),
      params: new Map([["logits", L]]),
    });
    let want = 0;
    for (let r = 0; r < 6; r++) {
      const row = [...L.data.subarray(r * 5, r * 5 + 5)];
      const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
      want += m.data[r] * (lse - row[tg.data[r]]);
    }
    assert.ok(Math.abs(lv.data[0] - want / 4) < 1e-12, `loss ${lv.data[0]} vs ${want / 4}`);
    closed.data.forEach((x, i) => assert.ok(Math.abs(x - byAutodiff.data[i]) < 1e-12, `dlogits[${i}]`));
  });
});

describe("AdamW step", () => {
  test("one step in the interpreter equals AdamW written out by hand (bias correction, decay on matrices only, clipping)", () => {
    const kit = new GraphKit();
    const x = kit.input("x", [4, 3]);
    const w = kit.param("w", [3, 5]);
    const b = kit.param("b", [5]);
    const model = kit.model("m", [kit.t.add(kit.t.matmul(x, w), b)]);
    const opt = { ...DEFAULT_OPTIMIZER, clip: 0.5, weightDecay: 0.1 };
    const tg = buildTrainGraph(model, opt);
    const params = new Map([
      ["w", randomTensor([3, 5], 2)],
      ["b", randomTensor([5], 3)],
      ["w@adam_m", randomTensor([3, 5], 4, -0.1, 0.1)],
      ["w@adam_v", randomTensor([3, 5], 5, 0, 0.1)],
      ["b@adam_m", tensor([5])],
      ["b@adam_v", tensor([5])],
    ]);
    const step = 3;
    const lr = 0.01;
    const inputs = new Map<string, Tensor>([
      ["x", randomTensor([4, 3], 6)],
      ["targets", tensor([4], [0, 4, 1, 1])],
      ["loss_mask", tensor([4], [1, 1, 0, 1])],
    ]);
    for (const [k, v] of Object.entries(adamScalars(step, lr, opt))) inputs.set(k, tensor([], [v]));
    const outs = interpret(
      tg.model.outputs.map((o) => o.node),
      { dims: {}, inputs, params },
    );
    const byName = new Map(tg.model.outputs.map((o, i) => [o.name, outs[i]]));
    // the gradients themselves, from reverse mode on the same loss
    const loss = tg.model.outputs[0].node;
    const grads = interpret(gradients(kit.g, loss, [w, b]), { dims: {}, inputs, params });
    const norm = Math.sqrt(grads.reduce((a, g) => a + g.data.reduce((s, v) => s + v * v, 0), 0));
    assert.ok(Math.abs(byName.get("grad_norm")!.data[0] - norm) < 1e-12);
    const scale = Math.min(1, opt.clip / (norm + 1e-6));
    (["w", "b"] as const).forEach((name, k) => {
      const p = params.get(name)!;
      const m0 = params.get(`${name}@adam_m`)!;
      const v0 = params.get(`${name}@adam_v`)!;
      p.data.forEach((pv, i) => {
        const g = grads[k].data[i] * scale;
        const m = opt.beta1 * m0.data[i] + (1 - opt.beta1) * g;
        const v = opt.beta2 * v0.data[i] + (1 - opt.beta2) * g * g;
        const upd = m / (1 - opt.beta1 ** step) / (Math.sqrt(v / (1 - opt.beta2 ** step)) + opt.eps);
        const want = pv - lr * (upd + (name === "w" ? opt.weightDecay * pv : 0));
        assert.ok(Math.abs(byName.get(`new:${name}`)!.data[i] - want) < 1e-9, `${name}[${i}]: ${byName.get(`new:${name}`)!.data[i]} vs ${want}`);
        assert.ok(Math.abs(byName.get(`new:${name}@adam_m`)!.data[i] - m) < 1e-12);
      });
    });
    assert.deepEqual(
      tg.trained.map((t) => [t.name, t.decay]),
      [
        ["w", true],
        ["b", false],
      ],
    );
  });

  test("learning rate: linear warm-up, cosine down to 10% of the peak", () => {
    assert.equal(learningRate(5, 100, 1, 10), 0.5);
    assert.equal(learningRate(10, 100, 1, 10), 1);
    assert.ok(Math.abs(learningRate(100, 100, 1, 10) - 0.1) < 1e-12);
    for (let s = 11; s < 100; s++) assert.ok(learningRate(s + 1, 100, 1, 10) <= learningRate(s, 100, 1, 10));
  });
});

describe("train sections", () => {
  test("the stages of each tiny-vqa model: backbones first, then the fine-tuning stage", () => {
    const stages = trainStages(loadProgram("models/tiny-vqa.dehvf"));
    assert.deepEqual(
      stagesFor(stages, "TinyVQAMemVP").map((s) => s.name),
      ["pretrain_vision", "pretrain_language", "finetune"],
    );
    assert.deepEqual(
      stagesFor(stages, "TinyLM").map((s) => s.name),
      ["pretrain_language"],
    );
    assert.equal(stages.find((s) => s.name === "pretrain_vision")!.task, "classify");
  });

  /** The train sections of a one-model file (model M, a tiny LM) with `body` as its sections. */
  const sectionsOf = (body: string) => {
    const dir = mkdtempSync(join(tmpdir(), "dehvf-stages-"));
    try {
      writeFileSync(
        join(dir, "m.dehvf"),
        `import "std/llama.dehvf"\nmodel M {\n  language = Llama(vocab: 16, d: 8, layers: 1, heads: 1, ffn: 8)\n  forward(tokens: [B, T] int) -> [B, T, 16] = language(tokens)\n}\n${body}\n`,
      );
      return trainStages(loadProgram(join(dir, "m.dehvf")));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const bad = (body: string, re: RegExp) =>
    assert.throws(
      () => sectionsOf(body),
      (e: unknown) => e instanceof DehvfError && re.test(e.message) && e.diagnostics[0].span !== undefined && /m\.dehvf:\d+:\d+/.test(e.render()),
    );
  test("a model's last section is its own: a later section may go on from an earlier one of the same model", () => {
    const stages = sectionsOf(
      `train first { model = M\n  task = "text" }\ntrain longer { model = M\n  task = "text"\n  backbones = [first] }\ntrain tune { task = "text"\n  backbones = [longer] }`,
    );
    assert.deepEqual(
      stagesFor(stages, "M").map((s) => s.name),
      ["first", "longer"],
    );
    assert.deepEqual(
      stagesFor(stages, "Other").map((s) => s.name),
      ["first", "longer", "tune"],
    );
  });

  test("`oversample`: how often each listed question type's texts appear, by type name", () => {
    const [s] = sectionsOf(`train a { model = M\n  task = "text"\n  oversample = ["count" * 4, "position-fine" * 2] }`);
    assert.deepEqual(s.oversample, { count: 4, "position-fine": 2 });
    assert.equal(sectionsOf(`train a { model = M\n  task = "text" }`)[0].oversample, undefined, "none unless set: older stages keep their identity");
  });

  test("bad sections are located errors", () => {
    bad(`train a { task = "text"\n  stepz = 3 }`, /unknown key `stepz`/);
    bad(`train a { model = Nope\n  task = "text" }`, /no model named `Nope`/);
    bad(`train a { task = "poetry" }`, /unknown task `poetry`/);
    bad(`train a { task = "text"\n  backbones = [b] }\ntrain b { model = M\n  task = "text" }`, /comes later/);
    bad(`train a { task = "text"\n  steps = 2.5 }`, /whole number/);
    bad(`train a { task = "text"\n  weights = "bf16" }`, /`weights` is "f16" or "f32", got "bf16"/);
    bad(`train a { task = "text"\n  recompute = "yes" }`, /`recompute` is true or false/);
    bad(`train a { task = "text"\n  solution_given = 1 }`, /`solution_given` is true or false/);
    bad(`train a { task = "vqa"\n  solution_given = true }`, /`solution_given` applies to the "text" task/);
    bad(`train a { task = "vqa"\n  oversample = ["count" * 2] }`, /`oversample` applies to the "text" task/);
    bad(`train a { task = "text"\n  oversample = "count" }`, /`oversample` is a list of question types/);
    bad(`train a { task = "text"\n  oversample = ["count" + 2] }`, /`oversample` is a list of question types/);
    bad(`train a { task = "text"\n  oversample = ["counts" * 2] }`, /unknown question type "counts" in `oversample`/);
    bad(`train a { task = "text"\n  oversample = ["count" * 0] }`, /`oversample` must be at least 1, got 0/);
    bad(`train a { task = "text"\n  oversample = ["count" * 2, "count" * 3] }`, /"count" is listed twice/);
  });
});

// ---------------------------------------------------------------------------
// On the device

let gpu: Gpu | undefined;
let noGpu = "no WebGPU device";
before(async () => {
  try {
    gpu = await acquireGpu();
  } catch (e) {
    if (!(e instanceof NoAdapterError)) throw e;
    noGpu = "skipped: no WebGPU adapter (npm run setup installs lavapipe)";
  }
});
after(() => gpu?.destroy());
const device = (t: TestContext) => {
  if (!gpu) t.skip(noGpu);
  return gpu;
};

describe("the compiled training step", () => {
  test("WebGPU step = interpreter step (loss, gradient norm, every updated tensor) for DEHVF, MemVP and concat", async (t) => {
    const g = device(t);
    if (!g) return;
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"]) await checkTrainStep(g, elaborate(loadProgram(MICRO), name), { B: 2, T: 6 });
  });

  test("with the frozen weights stored as f16: the same step as the interpreter's on those weights rounded to f16", async (t) => {
    const g = device(t);
    if (!g) return;
    if (!g.hasF16) return t.skip("this adapter has no shader-f16");
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
      await checkTrainStep(
        g,
        elaborate(loadProgram(MICRO), name),
        { B: 2, T: 6 },
        (tr) => {
          const half = tr.plan.params.filter((p) => p.dtype === "f16");
          // the backbones are frozen; the fusion and AdamW's moments train in f32
          const trained = new Set(tr.stateNames);
          assert.ok(half.length > 0 && half.every((p) => !trained.has(p.name)), `${name}: ${half.map((p) => p.name).join(", ")}`);
        },
        "f16",
      );
  });
});

describe("numerics of the step in f32", () => {
  test("activations far into saturation keep finite gradients (σ is ½·tanh(x/2)+½, not 1/(1+e^-x))", async (t) => {
    const g = device(t);
    if (!g) return;
    const dir = mkdtempSync(join(tmpdir(), "dehvf-act-"));
    try {
      writeFileSync(
        join(dir, "act.dehvf"),
        `model Act {\n  param w: [4, 6] init normal(1.0)\n  forward(x: [B, 4]) -> [B, 6] = silu(x @ w) + quick_gelu(x @ w) + gelu(x @ w) + sigmoid(x @ w)\n}\n`,
      );
      const model = elaborate(loadProgram(join(dir, "act.dehvf")), "Act");
      const trainer = await Trainer.create(g, model, { B: 2 }, initAllParams(model, 0));
      const x = tensor([2, 4], [300, -300, 120, -90, -250, 200, -1000, 1000]);
      const r = await trainer.step(
        new Map([
          ["x", x],
          ["targets", tensor([2], [1, 4])],
          ["loss_mask", tensor([2], [1, 1])],
        ]),
        1,
        1e-3,
      );
      trainer.destroy();
      assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.gradNorm), `loss ${r.loss}, grad norm ${r.gradNorm}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------
// The CLI, end to end

function dehvf(args: string[], env: Record<string, string> = {}): { code: number | null; signal: string | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 300_000, env: { ...process.env, ...env } });
  return { code: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}

describe("dehvf train / eval", () => {
  let work = "";
  let data = "";
  before(async () => {
    work = mkdtempSync(join(tmpdir(), "dehvf-train-"));
    data = join(work, "data");
    await buildDefaultData(data, { train: 200, val: 50, test: 50 });
  });
  after(() => rmSync(work, { recursive: true, force: true }));
  const train = (out: string, extra: string[] = [], env: Record<string, string> = {}) =>
    dehvf(["train", MICRO, "--data", data, "--out", join(work, out), "--eval-problems", "16", "--eval-captions", "4", ...extra], env);

  test("trains all stages, writes checkpoints, metrics, plot and eval; only the fusion trains in the last stage", (t) => {
    if (!device(t)) return;
    const r = train("full");
    assert.equal(r.code, 0, r.err + r.out);
    assert.match(r.out, /finetune \(TinyVQA\): trainable parameters 5,024 of 38,720 \(dehvf\)/);
    assert.match(r.out, /test accuracy [\d.]+% of 16 \(chance.*captions BLEU-4 [\d.]+ CIDEr-D [\d.]+/);
    assert.doesNotMatch(r.out, /NaN/, "periodic evaluations decode no captions and say nothing of them");
    const dir = join(work, "full", "finetune-TinyVQA");
    for (const f of ["final.safetensors", "metrics.jsonl", "loss.png", "eval.json"]) assert.ok(existsSync(join(dir, f)), f);
    assert.ok(!existsSync(join(dir, "work")), "the work area goes once the result is in place");
    assert.deepEqual(
      readMetrics(join(dir, "metrics.jsonl"))
        .filter((m) => "loss" in m)
        .map((m) => m.step),
      [1, 2, 3, 4],
    );
    const ev = JSON.parse(readFileSync(join(dir, "eval.json"), "utf8"));
    assert.equal(ev.trainable, 5024);
    assert.ok(ev.per_type && "position-fine" in ev.per_type && Number.isFinite(ev.cider_d));
    // the ViT's stage also answers the semantic questions from its own item predictions
    const vit = JSON.parse(readFileSync(join(work, "full", "pretrain_vision", "eval.json"), "utf8"));
    assert.deepEqual(Object.keys(vit.answers_from_items).sort(), ["count", "position-coarse", "position-fine", "presence"]);
    for (const v of Object.values(vit.answers_from_items)) assert.ok((v as number) >= 0 && (v as number) <= 1);
    assert.match(r.out, /item accuracy [\d.]+% \(chance 10\.0%\); questions answered from the predicted items: count [\d.]+%, position-coarse/);

    // a second run reuses every finished stage
    const again = train("full");
    assert.equal(again.code, 0, again.err);
    assert.equal((again.out.match(/done before, reusing/g) ?? []).length, 3);

    const e = dehvf(["eval", MICRO, "--checkpoint", dir, "--data", data, "--problems", "16", "--captions", "4"]);
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /test accuracy [\d.]+% of 16/);
  });

  test("a run killed after a checkpoint and resumed logs the same losses as an uninterrupted one", async (t) => {
    if (!device(t)) return;
    cpSync(join(work, "full", "pretrain_vision"), join(work, "killed", "pretrain_vision"), { recursive: true });
    cpSync(join(work, "full", "pretrain_language"), join(work, "killed", "pretrain_language"), { recursive: true });
    const killed = train("killed", [], { DEHVF_KILL_AT: "finetune:checkpoint-2" });
    assert.equal(killed.signal, "SIGKILL");
    const resumed = train("killed", ["--resume"]);
    assert.equal(resumed.code, 0, resumed.err);
    assert.match(resumed.out, /resuming at step 2 of 4/);
    const losses = (run: string) =>
      readMetrics(join(work, run, "finetune-TinyVQA", "metrics.jsonl"))
        .filter((m) => "loss" in m)
        .map((m) => [m.step, m.loss]);
    assert.deepEqual(losses("killed"), losses("full"));
    const a = await openSafetensors(join(work, "full", "finetune-TinyVQA", "final.safetensors"));
    const b = await openSafetensors(join(work, "killed", "finetune-TinyVQA", "final.safetensors"));
    for (const n of a.names()) assert.deepEqual(await b.readF32(n), await a.readF32(n), n);
    await Promise.all([a.close(), b.close()]);
  });

  test("--seed N trains every stage with seed N beside the sections' own runs; --seed 0 (theirs) is the default run", async (t) => {
    if (!device(t)) return;
    const seeded = train("full", ["--seed", "1"]);
    assert.equal(seeded.code, 0, seeded.err + seeded.out);
    assert.doesNotMatch(seeded.out, /done before/);
    for (const stage of ["pretrain_vision", "pretrain_language", "finetune-TinyVQA"]) {
      const meta = await loadMeta(join(work, "full", `${stage}-seed1`, "final.safetensors"));
      assert.equal(JSON.parse(meta.identity).config.seed, 1, stage);
    }
    const losses = (dir: string) =>
      readMetrics(join(work, "full", dir, "metrics.jsonl"))
        .filter((m) => "loss" in m)
        .map((m) => m.loss);
    assert.notDeepEqual(losses("finetune-TinyVQA-seed1"), losses("finetune-TinyVQA"));
    const same = train("full", ["--seed", "0"]);
    assert.equal(same.code, 0, same.err);
    assert.equal((same.out.match(/done before, reusing/g) ?? []).length, 3);
  });

  test("--weights f16 fine-tunes beside the f32 run on the same backbones; --weights f32 is the default run", async (t) => {
    const g = device(t);
    if (!g) return;
    if (!g.hasF16) return t.skip("this adapter has no shader-f16");
    const half = train("full", ["--weights", "f16"]);
    assert.equal(half.code, 0, half.err + half.out);
    assert.equal((half.out.match(/done before, reusing/g) ?? []).length, 2, half.out);
    const meta = await loadMeta(join(work, "full", "finetune-TinyVQA-f16", "final.safetensors"));
    assert.equal(JSON.parse(meta.identity).config.weights, "f16");
    const same = train("full", ["--weights", "f32"]);
    assert.equal(same.code, 0, same.err);
    assert.equal((same.out.match(/done before, reusing/g) ?? []).length, 3);
  });
});
