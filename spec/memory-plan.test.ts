/**
 * The memory planner's in-place kernels: the aliasing rule on hand-built trees, its
 * invariants over random graphs and over the tiny-vqa forward and training plans
 * (only safe inputs aliased, liveness kept, pooling never worse), and plans with
 * in-place kernels run on WebGPU against the float64 interpreter.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import type { Node } from "../compiler/ir.ts";
import { type MemoryPlan, planMemory, readsOnlyAtOwnIndex } from "../compiler/memory-plan.ts";
import { ELEMENTWISE } from "../compiler/op-classes.ts";
import { runPipeline } from "../compiler/pipeline.ts";
import type { Plan } from "../lowering/plan.ts";
import { type Schedule, schedule } from "../compiler/schedule.ts";
import { numel } from "../compiler/tensor.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { runWebgpu } from "../runtime/webgpu-backend.ts";
import { fcRuns } from "./fc-runs.ts";
import { accTol, Case, compare, describePlan, seedArb, shapeArb, shuffle, uniform, useGpu } from "./gpu-check.ts";
import { GraphKit } from "./graph-model.ts";

const gpu = useGpu();

// ---------------------------------------------------------------------------
// Random graphs that offer in-place chances and traps.

/**
 * shared: a chain of five bounded unary ops (too costly to recompute) used twice, so it
 * gets a buffer; fork: a cheap use twice; reduce: a mean or max over an axis, broadcast
 * back (read through expand); permute / reshape: re-indexing views; keep / join: a value
 * read again much later; side: an extra output (a fixed slot).
 */
const STEPS = ["shared", "fork", "reduce", "permute", "reshape", "keep", "join", "side"] as const;
type Step = (typeof STEPS)[number];
// Shared steps in a row are what in-place kernels come from, and a view between two is
// the trap (an input read re-indexed): make both common.
const stepsArb = fc.array(
  fc.oneof(
    { arbitrary: fc.constant<Step>("shared"), weight: 4 },
    { arbitrary: fc.constantFrom<Step>("permute", "reshape"), weight: 2 },
    { arbitrary: fc.constantFrom(...STEPS), weight: 4 },
  ),
  { minLength: 3, maxLength: 9 },
);

const BOUNDED = ["tanh", "sin", "cos", "erf", "neg"] as const;

/** The graph `steps` build from an input `x` of `shape`; returns its outputs. */
function randomChain(c: Case, shape: readonly number[], steps: readonly Step[]): Node[] {
  const { t: o, rand } = c;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  let cur = c.in("x", [...shape], "f32", uniform(-2, 2));
  let kept: Node | undefined;
  const outs: Node[] = [];
  for (const step of steps) {
    const rank = cur.shape.length;
    const axis = Math.floor(rand() * rank);
    if (step === "shared") {
      for (let i = 0; i < 5; i++) cur = o.unary(pick(BOUNDED), cur);
      cur = o.add(o.unary("sin", cur), o.mul(cur, c.c(0.5)));
    } else if (step === "fork") cur = o.add(o.unary("sin", cur), o.mul(cur, c.c(0.5)));
    else if (step === "reduce") cur = o.mul(o.sub(cur, rand() < 0.5 ? o.mean(cur, axis, true) : o.max(cur, axis, true)), c.c(0.5));
    else if (step === "permute") cur = o.permute(cur, shuffle(rank, rand));
    else if (step === "reshape") cur = o.reshape(cur, [...cur.shape].reverse());
    else if (step === "keep") kept = cur;
    else if (step === "join" && kept && kept.shape.join() === cur.shape.join()) cur = o.add(cur, o.unary("cos", kept));
    else if (step === "side") outs.push(o.unary("tanh", cur));
  }
  return [...outs, cur];
}

// ---------------------------------------------------------------------------
// Invariants of a memory plan.

/** Nodes of `top`'s inline tree (stopping at buffers) that lie on a path from `top` to `target`. */
function nodesBetween(top: Node, target: Node, isBuffer: (n: Node) => boolean): Node[] {
  const reaches = new Map<Node, boolean>();
  const between: Node[] = [];
  const visit = (n: Node): boolean => {
    if (n === target) return true;
    if (n !== top && isBuffer(n)) return false;
    const known = reaches.get(n);
    if (known !== undefined) return known;
    const hit = n.src.map(visit).some(Boolean);
    reaches.set(n, hit);
    if (hit) between.push(n);
    return hit;
  };
  visit(top);
  return between;
}

/**
 * Asserts what makes an in-place kernel safe, checked independently of the planner:
 * the aliased input is a pooled intermediate of the output's type and size, read only
 * through elementwise ops at the output's shape, by no later kernel; and that no two
 * tensors of a slot are live at once except an in-place pair at its kernel.
 */
function assertSafe(s: Schedule, outputs: readonly Node[], m: MemoryPlan): void {
  const writer = new Map(s.kernels.flatMap((k, i) => [k.output, ...(k.also ?? [])].map((o) => [o, i] as const)));
  const lastRead = new Map<Node, number>();
  s.kernels.forEach((k, i) => k.inputs.forEach((n) => lastRead.set(n, i)));
  for (const [out, host] of m.inPlace) {
    const i = writer.get(out)!;
    const k = s.kernels[i];
    const what = `kernel #${i} (${out.op}) in place of ${host.op}#${host.id}`;
    assert.equal(k.kind, "elementwise", what);
    assert.ok(k.inputs.includes(host), `${what}: not its input`);
    assert.ok(host.op !== "input" && host.op !== "param" && !outputs.includes(host) && !outputs.includes(out), `${what}: a resident tensor`);
    assert.equal(m.slotOf.get(host)!.role, "pooled", what);
    assert.equal(m.slotOf.get(out), m.slotOf.get(host), what);
    assert.ok(
      s.kernels.slice(i + 1).every((later) => !later.inputs.includes(host)),
      `${what}: read by a later kernel`,
    );
    assert.equal(host.dtype, out.dtype, what);
    assert.equal(numel(s.shapes.get(host)!), numel(s.shapes.get(out)!), what);
    const own = s.shapes.get(out)!.join();
    for (const n of nodesBetween(out, host, (x) => s.materialized.has(x)))
      assert.ok(ELEMENTWISE.has(n.op) && s.shapes.get(n)!.join() === own, `${what}: read through ${n.op} at [${s.shapes.get(n)}]`);
  }
  for (const slot of m.slots.filter((sl) => sl.role === "pooled")) {
    const spans = slot.tensors.map((n) => ({ n, from: writer.get(n)!, to: lastRead.get(n) ?? writer.get(n)! })).sort((a, b) => a.from - b.from);
    for (let j = 1; j < spans.length; j++) {
      const [prev, next] = [spans[j - 1], spans[j]];
      const handOver = m.inPlace.get(next.n) === prev.n && next.from === prev.to;
      assert.ok(
        next.from > prev.to || handOver,
        `slot ${slot.id}: ${next.n.op}#${next.n.id} written at #${next.from} while ${prev.n.op}#${prev.n.id} lives to #${prev.to}`,
      );
    }
  }
}

/**
 * Schedules `roots` and plans memory with and without in-place kernels, placing tensors in
 * kernel order, largest first, and the better of the two; asserts the invariants of each
 * and returns the plan the compiler uses (in place, the better placement).
 */
function planBoth(roots: readonly { name: string; node: Node }[], dims: Readonly<Record<string, number>>): MemoryPlan {
  const s = schedule(roots, dims, { maxBindings: 8 });
  const outputs = roots.map((r) => r.node);
  const plans = ([undefined, "in-order", "by-size"] as const).map((order) => {
    const on = planMemory(s, outputs, { order });
    const off = planMemory(s, outputs, { inPlace: false, order });
    assert.equal(off.inPlace.size, 0);
    assertSafe(s, outputs, on);
    assertSafe(s, outputs, off);
    assert.ok(on.pooledBytes <= off.pooledBytes, `${order ?? "best"}: pooled ${on.pooledBytes} B in place vs ${off.pooledBytes} B without`);
    assert.equal(on.naiveBytes, off.naiveBytes);
    return on;
  });
  assert.equal(plans[0].pooledBytes, Math.min(plans[1].pooledBytes, plans[2].pooledBytes));
  return plans[0];
}

/**
 * Every kernel declares exactly the bindings the plan binds, and no slot is bound both
 * writable and read-only in one dispatch (WebGPU rejects that: the in-place input reads
 * through the output's binding instead).
 */
function assertBindings(plan: Plan): void {
  for (const k of plan.kernels) {
    const written = new Set(k.bindings.filter((b) => b.write).map((b) => b.slot));
    assert.ok(
      k.bindings.every((b) => b.write || !written.has(b.slot)),
      `kernel #${k.index} ${k.label} reads the slot it writes\n${describePlan(plan)}`,
    );
    if (k.kind !== "elementwise") continue;
    const declared = [...k.wgsl.matchAll(/@binding\((\d+)\)/g)].map((x) => Number(x[1])).sort((a, b) => a - b);
    assert.deepEqual(
      declared,
      k.bindings.map((b) => b.binding).sort((a, b) => a - b),
      `kernel #${k.index} ${k.label}`,
    );
  }
}

const inPlaceKernels = (plan: Plan) => plan.kernels.filter((k) => k.variant.endsWith(" in-place")).length;

// ---------------------------------------------------------------------------

describe("the in-place rule", () => {
  const kit = new GraphKit();
  const { t: o } = kit;
  const a = kit.input("a", [4, 4]);
  const b = kit.input("b", [1, 4]);
  const ids = kit.input("ids", [4], "i32");
  const buffers = new Set([a, b, ids]);
  const shapes = (...tops: Node[]) => {
    const m = new Map<Node, readonly number[]>();
    const add = (n: Node): void => {
      if (m.has(n)) return;
      m.set(n, n.shape.map(Number));
      n.src.forEach(add);
    };
    tops.forEach(add);
    return m;
  };
  const own = (out: Node, host: Node) => readsOnlyAtOwnIndex(out, host, (n) => buffers.has(n), shapes(out));

  test("elementwise chains at the output's shape read the input at the output's own index", () => {
    assert.ok(own(o.add(o.unary("exp", a), o.mul(a, o.scalar(2))), a));
    assert.ok(own(o.where(o.binary("cmplt", a, o.scalar(0)), a, o.unary("neg", a)), a));
    assert.ok(own(o.mul(a, o.expand(b, [4, 4])), a), "the other operand's broadcast is no concern of a's");
  });

  test("a movement op, broadcast or gather on any path re-indexes the input", () => {
    assert.ok(!own(o.add(a, o.permute(a, [1, 0])), a), "a also read transposed");
    assert.ok(!own(o.add(a, o.reshape(o.reshape(a, [16]), [4, 4])), a), "a reshape, even one that keeps the index");
    assert.ok(!own(o.permute(o.unary("exp", a), [1, 0]), a), "the output itself is a view");
    assert.ok(!own(o.mul(a, o.expand(b, [4, 4])), b), "b is broadcast");
    assert.ok(!own(o.gather(a, ids), a), "a gathered");
    assert.ok(!own(o.add(o.slice(o.pad(a, 0, 1, 0), 0, 0, 4), a), a), "a padded and sliced");
  });

  test("an input of another type (read through a cast) is never aliased", () => {
    const c = new GraphKit();
    const heavy = (x: Node) => [0, 1, 2, 3, 4].reduce((v) => c.t.unary("tanh", v), x);
    const build = (dtype: "f32" | "i32") => {
      // over the first axis: a last-axis sum would join its consumer in one row kernel
      const s = c.t.sum(c.input(`x${dtype}`, [4, 8], dtype), 0, true);
      const h = heavy(c.t.float(s)); // shared and costly: it gets a buffer and reads s at its own index
      return c.t.add(c.t.unary("sin", h), h);
    };
    for (const dtype of ["f32", "i32"] as const) {
      assert.equal(planBoth([{ name: "out", node: build(dtype) }], {}).inPlace.size, dtype === "f32" ? 1 : 0, dtype);
    }
  });
});

describe("in-place plans", () => {
  test("random graphs: only safe inputs aliased, liveness kept, pooling never worse", (t) => {
    let inPlace = 0;
    fc.assert(
      fc.property(shapeArb(4000, 1, 4), stepsArb, seedArb, (shape, steps, seed) => {
        const c = new Case(seed);
        const outs = randomChain(c, shape, steps);
        inPlace += planBoth(
          outs.map((node, i) => ({ name: `out${i}`, node })),
          {},
        ).inPlace.size;
      }),
      fcRuns(200),
    );
    t.diagnostic(`in place: ${inPlace}`);
    assert.ok(inPlace > 0, "no random graph had an in-place kernel");
  });

  const program = loadProgram("models/tiny-vqa.dehvf");
  const micro = loadProgram("spec/fixtures/train/micro.dehvf");
  const models: [string, () => CompiledModel][] = ["TinyVQA", "TinyVQAMemVP", "TinyVQAConcat"].flatMap((name): [string, () => CompiledModel][] => [
    [`${name} forward`, () => elaborate(program, name)],
    [`${name} training step`, () => buildTrainGraph(elaborate(program, name)).model],
    [`${name} micro training step`, () => buildTrainGraph(elaborate(micro, name)).model],
    [`${name} micro training step, layers recomputed`, () => buildTrainGraph(elaborate(micro, name, { training: true }), undefined, { recompute: true }).model],
  ]);
  test("tiny-vqa forward and training plans: the same invariants; every training step runs some kernels in place", () => {
    for (const [what, build] of models) {
      const m = build();
      const on = planBoth(runPipeline(m.outputs, m.graph), { B: 2, T: 6 });
      if (what.includes("training")) assert.ok(on.inPlace.size > 0, `${what}: no in-place kernel`);
    }
  });
});

describe("in-place plans on WebGPU", () => {
  test("random graphs match the interpreter; in-place inputs get no binding of their own", async (t) => {
    if (!gpu.device(t)) return;
    let inPlace = 0;
    await fc.assert(
      fc.asyncProperty(shapeArb(3000, 1, 4), stepsArb, seedArb, async (shape, steps, seed) => {
        const c = new Case(seed);
        const outs = randomChain(c, shape, steps);
        const plan = (await gpu.check(t, c, outs, { tol: accTol(Math.max(...shape)), what: `[${shape}] ${steps.join(" ")}` }))!;
        assertBindings(plan);
        assert.equal(inPlaceKernels(plan), plan.memory.inPlace.size, describePlan(plan));
        inPlace += plan.memory.inPlace.size;
      }),
      fcRuns(60),
    );
    t.diagnostic(`in place: ${inPlace}`);
    assert.ok(inPlace > 0, "no random graph ran a kernel in place");
  });

  // (its forward has no in-place kernel left since the FFN memory's keys and values come
  // out of the projection's epilogue; the training steps in spec/train.test.ts run some)
  test("TinyVQA with in-place planning on still matches the interpreter within 1e-4", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    const m = elaborate(loadProgram("models/tiny-vqa.dehvf"), "TinyVQA");
    const dims = { B: 2, T: 6 };
    const params = initAllParams(m, 0);
    const inputs = syntheticInputs(m, 0, dims);
    const want = runInterp(m, params, { seed: 0, dims, inputs });
    const r = await runWebgpu(g, m, params, inputs, dims);
    assertBindings(r.plan);
    want.forEach((w, i) => compare(r.outputs[i], w, 1e-4, `TinyVQA ${m.outputs[i].name}`, r.plan));
  });
});

// ---------------------------------------------------------------------------
// KV-cache slots (write_slot): written in place into the cache's own buffer when no
// later kernel reads the old cache, copied otherwise; either way the interpreter's value.

/** A cache [B, H, C, D] (or rank 3 without H) with one new row per batch entry written along `axis`; `hazard`: the old cache is read again after. */
function slotGraph(c: Case, dims: { B: number; H: number; C: number; D: number }, rank: 3 | 4, hazard: boolean): { outs: Node[]; old: Node; write: Node } {
  const { B, H, C, D } = dims;
  const shape = rank === 4 ? [B, H, C, D] : [B, C, D];
  const axis = rank - 2;
  const old = c.in("cache", shape);
  const x = c.t.unary(
    "tanh",
    c.in(
      "x",
      shape.map((d, i) => (i === axis ? 1 : d)),
    ),
  );
  const pos = c.in("pos", [B], "i32", (r) => Math.floor(r() * C));
  const write = c.t.make("write_slot", [old, x, pos], { axis });
  // what attention does with the cache: read every slot (here against a query of its own)
  const q = c.in(
    "q",
    shape.map((d, i) => (i === axis ? 2 : d)),
  );
  const scores = c.t.matmul(q, c.t.transposeLast(write));
  const outs = [write, scores];
  if (hazard) outs.push(c.t.mul(c.t.unary("sin", old), write));
  return { outs, old, write };
}

describe("cache slots written in place", () => {
  test("the write takes the cache's own buffer unless a later kernel reads the old cache", () => {
    for (const hazard of [false, true]) {
      const c = new Case(3);
      const { outs, old, write } = slotGraph(c, { B: 2, H: 2, C: 5, D: 3 }, 4, hazard);
      const s = schedule(
        outs.map((node, i) => ({ name: `o${i}`, node })),
        {},
        { maxBindings: 8 },
      );
      const m = planMemory(s, outs);
      assert.equal(m.slotOf.get(write) === m.slotOf.get(old), !hazard, `hazard ${hazard}`);
      assert.equal(m.inPlace.get(write) === old, !hazard);
      assert.equal(planMemory(s, outs, { inPlace: false }).inPlace.size, 0);
    }
  });

  test("random caches, positions and layouts match the interpreter on WebGPU, in place or copied", async (t) => {
    if (!gpu.device(t)) return;
    const seen = { inPlace: 0, copied: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          B: fc.integer({ min: 1, max: 3 }),
          H: fc.integer({ min: 1, max: 3 }),
          C: fc.integer({ min: 1, max: 9 }),
          D: fc.integer({ min: 1, max: 5 }),
        }),
        fc.constantFrom<3 | 4>(3, 4),
        fc.boolean(),
        seedArb,
        async (dims, rank, hazard, seed) => {
          const c = new Case(seed);
          const { outs } = slotGraph(c, dims, rank, hazard);
          const plan = (await gpu.check(t, c, outs, { what: `${JSON.stringify(dims)} rank ${rank}${hazard ? " hazard" : ""}` }))!;
          assertBindings(plan);
          const k = plan.kernels.find((x) => x.kind === "write-slot")!;
          assert.equal(k.variant, hazard ? "write-slot" : "write-slot in-place", describePlan(plan));
          seen[hazard ? "copied" : "inPlace"]++;
        },
      ),
      fcRuns(30),
    );
    t.diagnostic(`in place ${seen.inPlace}, copied ${seen.copied}`);
  });
});
