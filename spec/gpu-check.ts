/**
 * Running graphs on the WebGPU device against the float64 interpreter, for the test
 * files that check generated kernels: the device fixture, hand-built graphs with seeded
 * values (Case), the comparison, and shape arbitraries.
 */
import assert from "node:assert/strict";
import { after, before, type TestContext } from "node:test";
import fc from "fast-check";
import { type Shape, shapeEval } from "../compiler/dims.ts";
import { interpret } from "../compiler/interpret.ts";
import type { DType, Node } from "../compiler/ir.ts";
import { rng } from "../util/rng.ts";
import type { Root } from "../compiler/pipeline.ts";
import { buildPlan, type Plan, type PlanTarget } from "../lowering/plan.ts";
import { numel, type Tensor } from "../compiler/tensor.ts";
import { acquireGpu, type Gpu, NoAdapterError } from "../runtime/device.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { GraphKit } from "./graph-model.ts";

// ---------------------------------------------------------------------------
// Device: acquired once per test file, destroyed at the end.

export interface GpuFixture {
  /** the device's plan target; set once the device is acquired (in a `before` hook) */
  readonly target: PlanTarget;
  /** The device, or undefined after marking the test skipped. */
  device(t: TestContext): Gpu | undefined;
  /** runAndCompare on this device, or undefined after marking the test skipped; `what` defaults to the test's name */
  check(t: TestContext, c: Case, outs: readonly Node[], opts?: CheckOptions): Promise<Plan | undefined>;
}

/**
 * Registers the file's `before`/`after` hooks: call it once at the top level of a test
 * file. `onTarget` receives the plan target once the device is acquired.
 */
export function useGpu(onTarget?: (target: PlanTarget) => void): GpuFixture {
  let gpu: Gpu | undefined;
  let target: PlanTarget | undefined;
  let noGpu = "no WebGPU device";
  before(async () => {
    try {
      gpu = await acquireGpu();
      target = planTarget(gpu);
      onTarget?.(target);
    } catch (e) {
      if (!(e instanceof NoAdapterError)) throw e;
      noGpu = `skipped: no WebGPU adapter on this machine (install Mesa lavapipe >= 24: \`npm run setup\`)`;
    }
  });
  after(() => {
    gpu?.destroy();
    gpu = undefined;
  });
  const device = (t: TestContext): Gpu | undefined => {
    if (!gpu) t.skip(noGpu);
    return gpu;
  };
  return {
    get target() {
      return target!;
    },
    device,
    async check(t, c, outs, opts = {}) {
      const g = device(t);
      return g && runAndCompare(g, target!, c, outs, { ...opts, what: opts.what ?? t.name });
    },
  };
}

/** "" when this machine has a WebGPU adapter, else why the tests that need one are skipped (for files that run the CLI). */
export async function gpuSkipReason(): Promise<string> {
  try {
    (await acquireGpu()).destroy();
    return "";
  } catch (e) {
    if (!(e instanceof NoAdapterError)) throw e;
    return "skipped: no WebGPU adapter (npm run setup installs lavapipe)";
  }
}

// ---------------------------------------------------------------------------
// Random data: a seeded generator; floats are f32-representable so the device sees the
// same inputs as the float64 interpreter (comparisons and masks then agree exactly).

export type Gen = (rand: () => number, i: number) => number;
export const uniform =
  (lo: number, hi: number): Gen =>
  (r) =>
    Math.fround(lo + (hi - lo) * r());
export const ints =
  (lo: number, hi: number): Gen =>
  (r) =>
    lo + Math.floor(r() * (hi - lo + 1));

/** A graph under construction plus values for its inputs and params. */
export class Case extends GraphKit {
  readonly values = new Map<string, Tensor>();
  readonly params = new Map<string, Tensor>();
  readonly rand: () => number;

  /** values of run-time dims, for inputs with symbolic shapes */
  constructor(
    seed = 1,
    readonly dims: Readonly<Record<string, number>> = {},
  ) {
    super();
    this.rand = rng(seed);
  }

  private fill(shape: readonly number[], gen: Gen): Tensor {
    const data = new Float64Array(numel(shape));
    for (let i = 0; i < data.length; i++) data[i] = gen(this.rand, i);
    return { shape: [...shape], data };
  }

  /** An input named `name` filled by `gen` (default uniform [-1, 1), ints in [-5, 5]). */
  in(name: string, shape: Shape, dtype: DType = "f32", gen?: Gen): Node {
    this.values.set(name, this.fill(shapeEval(shape, this.dims), gen ?? (dtype === "i32" ? ints(-5, 5) : uniform(-1, 1))));
    return this.input(name, shape, dtype);
  }

  w(name: string, shape: readonly number[], gen: Gen = uniform(-1, 1)): Node {
    this.params.set(name, this.fill(shape, gen));
    return this.param(name, shape);
  }

  c(v: number): Node {
    return this.t.scalar(v);
  }
}

// ---------------------------------------------------------------------------
// Plan, run, compare.

export interface CheckOptions {
  /** plan for this target instead of the device default (e.g. force chain fusion on) */
  readonly target?: PlanTarget;
  /** relative tolerance per output: |got - want| ≤ tol · max(1, |want|) */
  readonly tol?: number | readonly number[];
  /** run the pass pipeline (default: plan the raw roots) */
  readonly pipeline?: boolean;
  readonly what?: string;
}

export const F32_TOL = 1e-4;

export function describePlan(plan: Plan): string {
  return plan.kernels.map((k) => `#${k.index} ${k.label} [${k.variant}] wg=${k.workgroups.join("x")} bindings=${k.bindings.length}`).join("\n");
}

export function compare(got: Tensor, want: Tensor, tol: number, what: string, plan: Plan): void {
  assert.deepEqual([...got.shape], [...want.shape], `${what}: shape`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.data.length; i++) {
    const [a, b] = [got.data[i], want.data[i]];
    if (a === b || (Number.isNaN(a) && Number.isNaN(b))) continue; // ±inf included
    const excess = Math.abs(a - b) - tol * Math.max(1, Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    const idx: number[] = [];
    let r = worst;
    for (let k = want.shape.length - 1; k >= 0; k--) {
      idx.unshift(r % want.shape[k]);
      r = Math.floor(r / want.shape[k]);
    }
    let bad = 0;
    for (let i = 0; i < want.data.length; i++) {
      const [a, b] = [got.data[i], want.data[i]];
      if (!(a === b || (Number.isNaN(a) && Number.isNaN(b)) || Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)))) bad++;
    }
    assert.fail(
      `${what}: ${bad}/${want.data.length} elements off; worst at [${idx.join(", ")}] of [${want.shape.join(", ")}]: got ${got.data[worst]}, want ${want.data[worst]} (tol ${tol})\nplan:\n${describePlan(plan)}`,
    );
  }
}

/**
 * Plans `outs` (raw roots unless `pipeline`) for `target`, runs them on `gpu` and
 * compares each output with the interpreter's value of the original node. Returns the plan.
 */
export async function runAndCompare(
  gpu: Gpu,
  target: PlanTarget,
  c: Case,
  outs: readonly Node[],
  opts: CheckOptions & { readonly what: string },
): Promise<Plan> {
  const what = opts.what;
  const model = c.model(what, outs);
  const roots: Root[] | undefined = opts.pipeline ? undefined : model.outputs.map((o) => ({ name: o.name, node: o.node }));
  const plan = buildPlan(model, {}, opts.target ?? target, roots);
  for (const k of plan.kernels) assert.ok(k.bindings.length <= target.maxStorageBuffers, `kernel #${k.index} binds ${k.bindings.length} buffers`);
  const want = interpret(outs, { dims: {}, inputs: c.values, params: c.params });
  const ex = await PlanExecutor.create(gpu, plan);
  try {
    ex.writeParams(c.params);
    const got = await ex.run(c.values);
    assert.equal(got.length, outs.length);
    outs.forEach((_, i) => {
      const tol = typeof opts.tol === "number" ? opts.tol : (opts.tol?.[i] ?? F32_TOL);
      compare(got[i], want[i], tol, `${what} out${i}`, plan);
    });
  } finally {
    ex.destroy();
  }
  return plan;
}

/** Matmul/long-reduction tolerance: f32 accumulation error grows like sqrt(length). */
export const accTol = (len: number) => F32_TOL * Math.max(1, Math.sqrt(len));

// ---------------------------------------------------------------------------
// Shape arbitraries: sizes that are not multiples of 4, 8, 64 or of tile sizes, and 1.

export const AWKWARD = [1, 2, 3, 5, 7, 9, 13, 17, 31, 33, 63, 65, 97, 127, 129];
export const dimArb = fc.constantFrom(...AWKWARD);

/** A rank 1–4 shape with at most `maxNumel` elements. */
export function shapeArb(maxNumel = 20000, minRank = 1, maxRank = 4): fc.Arbitrary<number[]> {
  return fc.array(dimArb, { minLength: minRank, maxLength: maxRank }).filter((s) => numel(s) <= maxNumel);
}

export const seedArb = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** A permutation of 0..r-1 from `rand`. */
export function shuffle(r: number, rand: () => number): number[] {
  const p = [...Array(r).keys()];
  for (let i = r - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}
