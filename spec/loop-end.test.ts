/**
 * Rolled loops (kernels/loop-end.ts): on a CPU adapter every counted loop's trip count is
 * hidden from the driver's unroller, elsewhere the WGSL is what it was. Device-free; the
 * results of rolled and unrolled kernels are compared bit for bit in webgpu.test.ts.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { elaborate } from "../compiler/elaborate.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { loopEnd, rolledLoopsFor } from "../kernels/loop-end.ts";
import { buildPlan, type Plan, type PlanTarget, WEBGPU_DEFAULT_TARGET } from "../lowering/plan.ts";

/** lavapipe's shape: a CPU adapter with subgroups of 8 */
const CPU: PlanTarget = { ...WEBGPU_DEFAULT_TARGET, isFallback: true, subgroupSize: 8, subgroupMaxSize: 8, maxWorkgroupStorage: 32768, fuseChains: false };

/** every `for` loop's condition in the plan's WGSL, with its kernel */
function loopConditions(plan: Plan): { kernel: string; cond: string }[] {
  return plan.kernels.flatMap((k) =>
    [...k.wgsl.matchAll(/for \([^;]*;\s*([^;]*);/g)].map((m) => ({ kernel: `#${k.index} ${k.label} (${k.variant})`, cond: m[1].trim() })),
  );
}

describe("rolled loops", () => {
  test("loopEnd: the bare constant, or the constant or'ed with the anchor's length's top bit", () => {
    assert.equal(loopEnd(32, {}, "out0"), "32u");
    assert.equal(loopEnd(32, { rolledLoops: false }, "out0"), "32u");
    assert.equal(loopEnd(32, { rolledLoops: true }, "C"), "(32u | (arrayLength(&C) & 0x80000000u))");
    assert.equal(rolledLoopsFor(true, 128 * 2 ** 20), true);
    assert.equal(rolledLoopsFor(true, 2 ** 32), false, "a binding of 4 GiB could hold 2^31 f16 elements");
    assert.equal(rolledLoopsFor(false, 128 * 2 ** 20), false);
  });

  const program = loadProgram("models/tiny-vqa.dehvf");
  const step = buildTrainGraph(elaborate(program, "TinyVQA", { training: true }));
  const mutableParams = new Set(step.updates.map((u) => u.to));
  const plan = (target: PlanTarget) => buildPlan(step.model, { B: 4, T: 48 }, target, undefined, { mutableParams });

  test("tiny-vqa's training step on a rolled-loops CPU target: no counted loop ends at a bare constant", () => {
    const loops = loopConditions(plan({ ...CPU, rolledLoops: true }));
    // tree reductions (h > 0u; h >>= 1) are not counted loops
    const counted = loops.filter((l) => !/^\w+ > 0u$/.test(l.cond));
    assert.ok(counted.length > 100, `${counted.length} counted loops`);
    const bare = counted.filter((l) => !/^\w+ < \(\d+u \| \(arrayLength\(&\w+\) & 0x80000000u\)\)$/.test(l.cond));
    assert.deepEqual(bare, []);
  });

  test("without rolledLoops (GPUs, portable plans) the WGSL has no arrayLength", () => {
    for (const target of [{ ...CPU, rolledLoops: false }, WEBGPU_DEFAULT_TARGET]) {
      const p = plan(target);
      assert.ok(loopConditions(p).some((l) => /< \d+u$/.test(l.cond)));
      assert.deepEqual(
        p.kernels.filter((k) => k.wgsl.includes("arrayLength")).map((k) => k.label),
        [],
      );
    }
  });
});
