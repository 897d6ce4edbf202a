/**
 * The scheduler as named passes (compiler/schedule.ts, compiler/schedule/): the lists,
 * the order a plan goes through them, kernel counts and groupings of the shipped models
 * on the CPU (no device), the unfused baseline, and the `--dump-after` text.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { elaborate } from "../compiler/elaborate.ts";
import { LEAF_CONST } from "../compiler/op-classes.ts";
import { runPipeline } from "../compiler/pipeline.ts";
import { type Kernel, SCHEDULE_PASSES, SCHEDULE_STAGES, schedule, UNFUSED_PASSES } from "../compiler/schedule.ts";
import { dumpSchedule } from "../compiler/schedule/dump.ts";
import { KERNEL_KINDS } from "../lowering/kernel-kinds.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { buildPlan, type Plan, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";

const TINY = "models/tiny-vqa.dehvf";
const kinds = (ks: readonly Kernel[]) => ks.reduce<Record<string, number>>((h, k) => ({ ...h, [k.kind]: (h[k.kind] ?? 0) + 1 }), {});

describe("scheduler passes", () => {
  test("one list with fusion, a shorter one without; names unique", () => {
    assert.equal(new Set(SCHEDULE_PASSES.map((p) => p.name)).size, SCHEDULE_PASSES.length);
    assert.ok(UNFUSED_PASSES.length < SCHEDULE_PASSES.length);
    const fusing = ["epilogues", "row-groups", "sum-folds", "merge-elementwise"];
    for (const name of fusing) assert.ok(SCHEDULE_PASSES.some((p) => p.name === name) && !UNFUSED_PASSES.some((p) => p.name === name), name);
    assert.deepEqual([...SCHEDULE_STAGES].sort(), [...new Set([...SCHEDULE_PASSES, ...UNFUSED_PASSES].map((p) => p.name))].sort());
  });

  test("a schedule goes through the passes in their order, and the dump after each says what it grouped", () => {
    const m = elaborate(loadProgram(TINY), "TinyLM");
    const roots = runPipeline(m.outputs, m.graph);
    const seen: string[] = [];
    const dumps = new Map<string, string>();
    schedule(roots, { B: 1, T: 8 }, { maxBindings: 8 }, undefined, (pass, s) => {
      seen.push(pass);
      dumps.set(pass, dumpSchedule(s, m.graph.provenance, m.program.sources));
    });
    assert.deepEqual(
      seen,
      SCHEDULE_PASSES.map((p) => p.name),
    );
    assert.doesNotMatch(dumps.get("fan-out")!, /chain softmax/);
    assert.equal(dumps.get("matmul-operands")!.match(/chain softmax/g)?.length, 4, "one attention chain per layer");
    assert.match(dumps.get("epilogues")!, /epilogue exit/);
    assert.match(dumps.get("row-groups")!, /row group along 2/);
    assert.doesNotMatch(dumps.get("row-groups")!, /kernels/);
    assert.match(dumps.get("kernels")!, /^#0 row /m);
  });

  test("kernel counts of the tiny LM's forward: per layer one attention kernel and two norms, one kernel per op unfused", () => {
    const m = elaborate(loadProgram(TINY), "TinyLM");
    const roots = runPipeline(m.outputs, m.graph);
    const fused = schedule(roots, { B: 1, T: 8 }, { maxBindings: 8 });
    const h = kinds(fused.kernels);
    assert.equal(h.attention, 4);
    assert.equal(h.row, 2 * 4 + 1);
    assert.equal(fused.kernels.length, 50);
    const unfused = schedule(roots, { B: 1, T: 8 }, { maxBindings: 8, fuse: false });
    const computed = [...unfused.materialized].filter((n) => n.op !== "input" && n.op !== "param" && !LEAF_CONST.has(n.op));
    assert.equal(unfused.kernels.length, computed.length);
    assert.equal(kinds(unfused.kernels).attention ?? 0, 0);
  });

  test("a training step's weight gradients fold their batch sums; its multi-output kernels merge", () => {
    const step = buildTrainGraph(elaborate(loadProgram(TINY), "TinyVQA", { training: true }));
    const roots = runPipeline(step.model.outputs, step.model.graph);
    const folds: number[] = [];
    const s = schedule(roots, { B: 2, T: 8 }, { maxBindings: 8 }, undefined, (pass, st) => {
      if (pass === "sum-folds") folds.push(st.sumFolds.size);
    });
    assert.ok(folds[0] > 0, "no batch sum folded");
    assert.ok(s.kernels.filter((k) => k.kind === "matmul" && k.matmul.sumAxis !== undefined).length === folds[0]);
    assert.ok(
      s.kernels.some((k) => k.kind === "elementwise" && (k.also?.length ?? 0) > 0),
      "no merged elementwise kernel",
    );
  });

  test("`dehvf compile --dump-after PASS` prints the scheduler's state; an unknown pass lists both kinds", () => {
    const ok = spawnSync(
      process.execPath,
      ["--import", "tsx", "bin/dehvf.ts", "compile", TINY, "-m", "TinyLM", "--dump-after", "kernels", "--dim", "B=1", "--dim", "T=8"],
      { encoding: "utf8" },
    );
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /# ---- after scheduler pass kernels ----\n# \d+ computed buffers/);
    assert.match(ok.stdout, /^#\d+ attention /m);
    const bad = spawnSync(process.execPath, ["--import", "tsx", "bin/dehvf.ts", "compile", TINY, "--dump-after", "kernelz"], { encoding: "utf8" });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /unknown stage "kernelz"/);
    assert.match(bad.stderr, /scheduler passes: sources, inline-depth/);
  });
});

describe("one lowering contract per kernel kind", () => {
  // what a lavapipe-like device offers: subgroups, f16, larger workgroup storage (textures and vec4 variants appear)
  const SUBGROUPS = { ...WEBGPU_DEFAULT_TARGET, subgroupSize: 8, maxWorkgroupStorage: 32768, shaderF16: true };
  /** @binding(n) → whether the shader writes it (read_write), reads it (read) or samples it (a texture) */
  const declared = (wgsl: string) =>
    new Map([...wgsl.matchAll(/@binding\((\d+)\) var(<storage, (read_write|read)>)? \w+ *: *(\w+)/g)].map((m) => [Number(m[1]), m[3] ?? `texture ${m[4]}`]));
  const check = (plan: Plan, what: string) => {
    for (const k of plan.kernels) {
      const want = new Map(k.bindings.map((b) => [b.binding, b.texture !== undefined ? "texture texture_2d" : b.write ? "read_write" : "read"]));
      assert.deepEqual(declared(k.wgsl), want, `${what}: kernel #${k.index} ${k.label} (${k.variant})`);
    }
  };
  test("every kernel kind has a lowering; every kernel of the shipped tiny models declares exactly the bindings its plan binds, with their access", () => {
    assert.deepEqual(Object.keys(KERNEL_KINDS).sort(), ["attention", "elementwise", "matmul", "reduce", "row", "write-slot"]);
    const p = loadProgram(TINY);
    const seen = new Set<string>();
    for (const name of ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"])
      for (const target of [WEBGPU_DEFAULT_TARGET, SUBGROUPS]) {
        const step = buildTrainGraph(elaborate(p, name, { training: true }));
        const plans: [string, Plan][] = [
          ["forward", buildPlan(elaborate(p, name), { B: 2, T: 8 }, target)],
          ["training step", buildPlan(step.model, { B: 2, T: 8 }, target, undefined, { mutableParams: new Set(step.updates.map((u) => u.to)) })],
          ["decode", buildPlan(generationModels(p, name).decode, { B: 2, C: 16 }, target)],
        ];
        for (const [what, plan] of plans) {
          check(plan, `${name} ${what}`);
          for (const k of plan.kernels) seen.add(k.kind);
        }
      }
    assert.deepEqual([...seen].sort(), Object.keys(KERNEL_KINDS).sort(), "every kind was checked");
  });
});
