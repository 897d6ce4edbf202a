/**
 * TensorFlow.js peers for the benchmarks, and the machinery to race them against ours:
 * tfjs-core with tfjs-backend-webgpu registered on *our* Dawn device (so both run on the
 * same adapter) and tfjs-backend-wasm (its .wasm files from the installed package).
 * Used by bench/matmul.ts and bench/layer.ts.
 */
import { createRequire } from "node:module";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import { buildSync } from "esbuild";
import { create } from "webgpu";
import type { Gpu } from "../runtime/device.ts";

const require = createRequire(import.meta.url);

export type Tf = typeof import("@tensorflow/tfjs-core");

export interface Peers {
  readonly tf: Tf;
  /** tfjs-webgpu registered as "webgpu" on our device */
  readonly webgpu: boolean;
  /** tfjs-wasm registered as "wasm": "simd, 1 thread(s)" or the like; undefined when unavailable */
  readonly wasm: string | undefined;
}

/** the dawn instance tfjs's "is WebGPU supported" check looks for; kept referenced (see device.ts) */
let dawnForTfjs: GPU | undefined;

/** Loads tfjs-core and registers both peer backends (the last one set is "wasm"). */
export async function loadPeers(gpu: Gpu): Promise<Peers> {
  const tf = require("@tensorflow/tfjs-core") as Tf;
  // tfjs-backend-webgpu checks globalThis.navigator.gpu. Import it first (so it does not
  // register its own device), then expose Dawn and register the backend on *our* device.
  const { WebGPUBackend } = require("@tensorflow/tfjs-backend-webgpu") as typeof import("@tensorflow/tfjs-backend-webgpu");
  dawnForTfjs ??= create([]);
  if (!(globalThis as { navigator?: unknown }).navigator) Object.defineProperty(globalThis, "navigator", { value: {}, configurable: true, writable: true });
  (globalThis.navigator as unknown as { gpu: GPU }).gpu = dawnForTfjs;
  let webgpu = false;
  try {
    tf.registerBackend("webgpu", () => new WebGPUBackend(gpu.device, { vendor: gpu.info.vendor, architecture: gpu.info.architecture } as GPUAdapterInfo));
    webgpu = await tf.setBackend("webgpu");
  } catch (e) {
    console.log(`tfjs-webgpu unavailable: ${(e as Error).message}`);
  }
  const wasmMod = require("@tensorflow/tfjs-backend-wasm") as typeof import("@tensorflow/tfjs-backend-wasm");
  // the .wasm files ship in the package: no download
  wasmMod.setWasmPaths(join(dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json")), "dist") + "/");
  let wasm: string | undefined;
  try {
    if (await tf.setBackend("wasm")) {
      const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
      wasm = `${simd ? "simd" : "no simd"}, ${wasmMod.getThreadsCount()} thread(s)`;
    }
  } catch (e) {
    console.log(`tfjs-wasm unavailable: ${(e as Error).message}`);
  }
  return { tf, webgpu, wasm };
}

/**
 * Registers TF.js's gradient functions, which only its union package (not installed: it
 * brings layers, converter and data) imports: tfjs-core ships them as extension-less ES
 * modules that Node cannot load, so they are bundled once here. Their copies of the ops
 * run on the one engine tfjs-core keeps in the global namespace.
 */
export function registerTfjsGradients(): void {
  if (gradientsRegistered) return;
  const entry = require.resolve("@tensorflow/tfjs-core/dist/register_all_gradients.js");
  const bundle = buildSync({ entryPoints: [entry], bundle: true, format: "cjs", platform: "node", write: false, logLevel: "silent" });
  new Function("require", "module", "exports", bundle.outputFiles[0].text)(require, { exports: {} }, {});
  gradientsRegistered = true;
}
let gradientsRegistered = false;

/** The "# peers: ..." header line. */
export const peersLine = ({ tf, webgpu, wasm }: Peers): string =>
  `# peers: tfjs-core ${tf.version_core}, tfjs-webgpu ${webgpu ? "on the same Dawn device" : "unavailable"}, tfjs-wasm ${wasm ?? "unavailable"}`;

/**
 * Ends tfjs-webgpu's open compute pass and submits its command encoder, the way its own
 * readback does, then waits on the (shared) queue without reading anything back.
 */
export async function flushTfjsWebgpu(tf: Tf, gpu: Gpu): Promise<void> {
  const backend = tf.backend() as unknown as { ensureCommandEncoderReady(): void; endComputePassEncoder(): void; submitQueue(): void };
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.submitQueue();
  await gpu.device.queue.onSubmittedWorkDone();
}

/** the three 1-minute / 5-minute / 15-minute load averages */
export const loadAverage = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");

// ---------------------------------------------------------------------------------------
// data and comparison

export const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** deterministic uniform(-1, 1) */
export function randomMatrix(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** max |x - y| over all entries (Infinity when any is NaN or the sizes differ) */
export function maxAbsDelta(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) return Infinity;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i] - y[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** max |x - y| as text ("0" when bitwise equal, NaN-aware) */
export const maxAbsDiff = (x: ArrayLike<number>, y: ArrayLike<number>): string => {
  if (x.length !== y.length) return "size mismatch";
  const m = maxAbsDelta(x, y);
  return m === 0 ? "0" : m.toExponential(1);
};

// ---------------------------------------------------------------------------------------
// racing

/**
 * One thing being timed: `batch(reps)` runs `reps` calls and waits for them (it may return
 * the device-side seconds, from timestamp queries).
 */
export interface Contender {
  readonly name: string;
  batch(reps: number): Promise<number | void>;
  reps?: number;
  readonly wall: number[];
  readonly dev: number[];
}

export const contender = (name: string, batch: (reps: number) => Promise<number | void>): Contender => ({ name, batch, wall: [], dev: [] });

export interface RaceOptions {
  /** minimum seconds per timed batch (0: one call per batch) */
  readonly batchSeconds: number;
  /** timed rounds */
  readonly batches: number;
  /** untimed calls per contender before calibration (default 1) */
  readonly warmup?: number;
}

/**
 * Warm-up and calibrate each contender (reps per batch to last `batchSeconds`), then run
 * `batches` rounds in which every contender runs one batch: all of them see the same
 * background load. Returns seconds per call (median over rounds) by name.
 */
export async function race(cs: Contender[], o: RaceOptions): Promise<Map<string, { s: number; device?: number }>> {
  for (const c of cs) {
    for (let w = 0; w < (o.warmup ?? 1); w++) await c.batch(1); // warm-up: pipeline compile, first touch of buffers
    const t0 = performance.now();
    await c.batch(1);
    const once = (performance.now() - t0) / 1000;
    c.reps = Math.max(1, Math.min(200, Math.round(o.batchSeconds / Math.max(once, 1e-6))));
  }
  for (let r = 0; r < o.batches; r++)
    for (const c of cs) {
      const t = performance.now();
      const d = await c.batch(c.reps!);
      c.wall.push((performance.now() - t) / 1000 / c.reps!);
      if (typeof d === "number") c.dev.push(d / c.reps!);
    }
  return new Map(cs.map((c) => [c.name, { s: median(c.wall), ...(c.dev.length ? { device: median(c.dev) } : {}) }]));
}
