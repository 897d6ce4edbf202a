/**
 * Opt-in matmul autotuning (`--autotune`, DEHVF_AUTOTUNE=1). For each distinct matmul of a
 * plan (kernels/matmul-tuning.ts: matmulKey) the candidate configurations are run on
 * random data, each checked against the cost model's choice before it may win, and timed;
 * the fastest median goes into a table that buildPlan takes, cached on disk per adapter
 * (runtime/autotune-cache.ts) so the next run plans without timing anything.
 *
 * Without the flag a cached table is not used: a plan then depends only on the model and
 * the device, not on what some earlier run happened to measure on a noisy host, so its
 * WGSL (and its results, bit for bit) are reproducible. Asking for --autotune with a warm
 * cache costs one plan build more.
 */
import { rng } from "../util/rng.ts";
import type { Plan } from "../lowering/plan.ts";
import { generateMatmul, type KernelTarget, type MatmulOptions, type MatmulSpec, operandExtent } from "../kernels/matmul.ts";
import { targetFromGpu } from "./kernel-target.ts";
import { matmulCandidates, matmulKey, type MatmulTuning, optionsFit, parseMatmulKey } from "../kernels/matmul-tuning.ts";
import { adapterIdentity, autotuneCacheDir, cacheFile, loadTuning, saveTuning, type TunedEntry } from "./autotune-cache.ts";
import type { Gpu } from "./device.ts";
import { createMatmulRun, type MatmulRun } from "./matmul-run.ts";

/** Milliseconds one batch of `dispatches` back-to-back dispatches of `run` takes. */
export type MatmulTimer = (device: GPUDevice, run: MatmulRun, dispatches: number) => Promise<number>;

/**
 * Wall clock around one submit: portable (timestamp queries are optional) and, with
 * batches of ~10 ms, dominated by the kernel rather than the ~1 ms wait (see
 * ../shared/notes/webgpu-on-cpu.md); the wait is the same for every candidate.
 */
export const wallClockTimer: MatmulTimer = async (device, run, dispatches) => {
  const enc = device.createCommandEncoder();
  run.encode(enc, dispatches, { fill: false });
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  return performance.now() - t0;
};

/** a timed batch lasts at least this long (dispatches ×4 until it does) */
const BATCH_MS = 10;
const MAX_DISPATCHES = 256;
/** timed batches per candidate: the median counts */
const REPS = 5;
/** a candidate whose first batch is this much slower than the first round's best is timed no further */
const HOPELESS = 1.5;
/** the default keeps its place unless beaten by more than this (host noise is ~±10%) */
const MIN_GAIN = 0.03;
/**
 * Matmuls below this many FLOPs keep the default untimed: at ~25 GFLOP/s they take ~10 µs,
 * the order of a dispatch's own cost, so no configuration can save much, and they are
 * many (every small projection of a training step's backward).
 */
const MIN_FLOPS = 2 ** 18;

export interface TuneReport extends TunedEntry {
  /** candidates that ran (the default included) */
  readonly tried: number;
  /** the default's kernel name (MatmulKernel.variant) */
  readonly defaultVariant: string;
  /** candidates dropped: wrong result or failed to compile, with why */
  readonly rejected: readonly string[];
}

export interface TuneOptions {
  readonly target?: KernelTarget;
  readonly timer?: MatmulTimer;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function randomOperand(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

/**
 * Dispatches per batch so that one batch lasts about BATCH_MS. Each size is timed twice and
 * the faster counts: one hiccup of the shared host must not stop it at a size whose time
 * is mostly the wait for the queue.
 */
async function calibrate(device: GPUDevice, run: MatmulRun, timer: MatmulTimer): Promise<number> {
  let n = 1;
  while (n < MAX_DISPATCHES && Math.min(await timer(device, run, n), await timer(device, run, n)) < BATCH_MS) n = Math.min(MAX_DISPATCHES, n * 4);
  return n;
}

/**
 * Times the candidates for one matmul (matmulCandidates: the cost model's choice first) on
 * random operands and returns the fastest. A candidate whose C differs from the default's
 * by more than f32 accumulation can explain (~2⁻²⁰·K^1.5 for operands in [-1, 1)) is
 * dropped before it is timed. Timing goes in rounds, one batch of every candidate per
 * round, so a change in the host's load hits all of them alike; after the first round,
 * candidates far behind the best stop being timed.
 */
export async function tuneMatmul(gpu: Gpu, spec: MatmulSpec, opts: TuneOptions = {}): Promise<TuneReport> {
  const target = opts.target ?? targetFromGpu(gpu);
  const timer = opts.timer ?? wallClockTimer;
  const { device } = gpu;
  const sizes = { aElems: operandExtent(spec, "a"), bElems: operandExtent(spec, "b"), cElems: spec.batchShape.reduce((x, y) => x * y, 1) * spec.M * spec.N };
  const a = randomOperand(sizes.aElems, 1);
  const b = randomOperand(sizes.bElems, 2);
  const tol = 2 ** -20 * spec.K ** 1.5;
  const rejected: string[] = [];
  const live: { options: MatmulOptions; run: MatmulRun; ms: number[] }[] = [];
  try {
    let reference: Float32Array | undefined;
    for (const options of matmulCandidates(spec, target)) {
      const kernel = generateMatmul(spec, target, options);
      let run: MatmulRun | undefined;
      try {
        run = await createMatmulRun(device, kernel, sizes);
        run.write(a, b);
        const c = await run.run(); // compiles, and gives the result to check before any timing
        if (reference && !c.every((x, i) => Math.abs(x - reference![i]) <= tol)) throw new Error("result differs from the default's");
        reference ??= c;
        live.push({ options, run, ms: [] });
      } catch (e) {
        run?.destroy();
        if (!reference) throw e; // the default is what plans run untuned: its failure is real
        rejected.push(`${kernel.variant}: ${String((e as Error).message).split("\n")[0]}`);
      }
    }
    const dispatches = await calibrate(device, live[0].run, timer);
    let timed = live;
    for (let r = 0; r < REPS; r++) {
      for (const c of timed) c.ms.push((await timer(device, c.run, dispatches)) / dispatches);
      const best = Math.min(...timed.map((c) => c.ms[0]));
      if (r === 0) timed = timed.filter((c, i) => i === 0 || c.ms[0] <= HOPELESS * best);
    }
    const dflt = { c: live[0], ms: median(live[0].ms) };
    let best = dflt;
    for (const c of timed.slice(1)) {
      const ms = median(c.ms);
      if (ms < best.ms && ms < dflt.ms * (1 - MIN_GAIN)) best = { c, ms };
    }
    return {
      options: best.c.options,
      variant: best.c.run.kernel.variant,
      defaultMs: dflt.ms,
      bestMs: best.ms,
      defaultVariant: dflt.c.run.kernel.variant,
      tried: live.length,
      rejected,
    };
  } finally {
    for (const c of live) c.run.destroy();
  }
}

export interface AutotuneOptions extends TuneOptions {
  /** default: autotuneCacheDir() */
  readonly cacheDir?: string;
  /** progress and summary lines (default: stderr) */
  readonly log?: (line: string) => void;
  /** a cache file ignored, and why (default: stderr) */
  readonly warn?: (line: string) => void;
}

/** Whether the user asked for tuning: the CLI flag, or DEHVF_AUTOTUNE=1. */
export function autotuneRequested(flag?: boolean): boolean {
  return Boolean(flag) || process.env.DEHVF_AUTOTUNE === "1";
}

/** The cache file for this device and how many tuned matmuls it holds (for `dehvf info`). */
export function tuningCacheStatus(gpu: Gpu, dir?: string, warn: (line: string) => void = () => {}): { file: string; shapes: number } {
  const id = adapterIdentity(gpu.info, targetFromGpu(gpu));
  const file = cacheFile(id, dir ?? autotuneCacheDir());
  return { file, shapes: loadTuning(file, id, warn).size };
}

const shape = (s: MatmulSpec, epilogue: string): string =>
  `${s.batchShape.length ? `${s.batchShape.join("×")}·` : ""}${s.M}×${s.N}×${s.K}${epilogue === "none" ? "" : ` +${epilogue}`}`;

/**
 * `build(tuning)` planned with its matmuls tuned on this device: the plan is built once
 * with a table that records which matmuls it has, those missing from the adapter's cache
 * are tuned (matmuls that differ only in their epilogue share one tune: the epilogue runs
 * once per output in every variant) and saved, then the plan is built with the table.
 */
export async function tunedPlan(gpu: Gpu, build: (tuning?: MatmulTuning) => Plan, opts: AutotuneOptions = {}): Promise<Plan> {
  const stderr = (line: string): void => void process.stderr.write(`${line}\n`);
  const log = opts.log ?? stderr;
  const warn = opts.warn ?? stderr;
  const target = opts.target ?? targetFromGpu(gpu);
  const id = adapterIdentity(gpu.info, target);
  const file = cacheFile(id, opts.cacheDir ?? autotuneCacheDir());
  const keys = new Set<string>();
  build({ get: (key) => void keys.add(key) });
  const cached = loadTuning(file, id, warn);
  const table = new Map<string, MatmulOptions>();
  const fresh = new Map<string, TunedEntry>();
  const bySpec = new Map<string, TunedEntry>();
  const t0 = performance.now();
  const flops = (s: MatmulSpec): number => 2 * s.batchShape.reduce((x, y) => x * y, s.M * s.N * s.K);
  const todo = [...keys].filter((k) => flops(parseMatmulKey(k)!.spec) >= MIN_FLOPS).sort();
  for (const [i, key] of todo.entries()) {
    const { spec, epilogue } = parseMatmulKey(key)!;
    let e = cached.get(key);
    if (e && !optionsFit(spec, target, e.options)) {
      warn(`autotune: the cached choice for ${key} no longer generates a kernel; tuning it again`);
      e = undefined;
    }
    if (!e) {
      const bare = matmulKey(spec, "none");
      e = bySpec.get(bare);
      if (!e) {
        const t = performance.now();
        const r = await tuneMatmul(gpu, spec, { target, timer: opts.timer });
        const pick = r.variant === r.defaultVariant ? "default kept" : `best ${r.variant} ${r.bestMs.toFixed(4)} ms (${(r.defaultMs / r.bestMs).toFixed(2)}×)`;
        log(
          `autotune [${i + 1}/${todo.length}] ${shape(spec, epilogue)}: default ${r.defaultVariant} ${r.defaultMs.toFixed(4)} ms, ${pick}; ${r.tried} tried${r.rejected.length ? `, ${r.rejected.length} rejected` : ""}, ${((performance.now() - t) / 1000).toFixed(1)} s`,
        );
        for (const why of r.rejected) log(`  rejected ${why}`);
        e = { options: r.options, variant: r.variant, defaultMs: r.defaultMs, bestMs: r.bestMs };
        bySpec.set(bare, e);
      }
      fresh.set(key, e);
    }
    table.set(key, e.options);
  }
  if (fresh.size) await saveTuning(file, id, fresh);
  log(
    `autotune: ${keys.size} matmul shapes, ${bySpec.size} tuned in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${todo.length - fresh.size} from the cache, ${keys.size - todo.length} too small to tune (${file})`,
  );
  return build(table);
}

/** `build()` as it is, or with its matmuls tuned when `autotune` is set (true: default options). */
export async function devicePlan(gpu: Gpu, build: (tuning?: MatmulTuning) => Plan, autotune?: boolean | AutotuneOptions): Promise<Plan> {
  if (!autotune) return build();
  return tunedPlan(gpu, build, autotune === true ? {} : autotune);
}
