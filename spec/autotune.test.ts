/**
 * The matmul autotuner: keys, the per-adapter cache (identity, corrupt and stale files),
 * and on the device a tuned plan of a small model against the float64 interpreter, the
 * cache written atomically and read back by a second tune without timing anything.
 *
 * The device part uses a fake timer: tuning then costs only the candidates' compiles,
 * and its ranking (from the kernels' names) makes some non-default kernels win, so the
 * tuned plan really runs configurations the cost model did not pick.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { elaborate } from "../compiler/elaborate.ts";
import { buildPlan, type Plan } from "../lowering/plan.ts";
import { loadProgram } from "../grammar/modules.ts";
import { generateMatmul, type KernelTarget, MATMUL_GENERATOR_VERSION, type MatmulSpec, resolveMatmulOptions } from "../kernels/matmul.ts";
import { targetFromGpu } from "../runtime/kernel-target.ts";
import { matmulCandidates, matmulKey, type MatmulTuning, parseMatmulKey } from "../kernels/matmul-tuning.ts";
import { type MatmulTimer, tunedPlan } from "../runtime/autotune.ts";
import { adapterIdentity, adapterKey, cacheFile, loadTuning, saveTuning, type TunedEntry } from "../runtime/autotune-cache.ts";
import type { DeviceInfo } from "../runtime/device.ts";
import { initAllParams, runInterp, syntheticInputs } from "../runtime/interp-backend.ts";
import { PlanExecutor } from "../runtime/executor.ts";
import { compare, useGpu } from "./gpu-check.ts";

const gpu = useGpu();
const dir = mkdtempSync(join(tmpdir(), "dehvf-autotune-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const INFO: DeviceInfo = {
  vendor: "mesa",
  architecture: "software",
  description: "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)",
  device: "llvmpipe-llvm-15-0-6-256-bits-",
  isFallback: true,
  subgroupMin: 8,
  subgroupMax: 8,
  features: ["subgroups"],
  limits: {},
};
const TARGET: KernelTarget = {
  isFallback: true,
  subgroupSize: 8,
  subgroupMaxSize: 8,
  maxWorkgroupStorage: 32768,
  maxInvocations: 1024,
  maxWorkgroupsPerDim: 65535,
  maxTextureDimension2D: 8192,
};

const SPEC: MatmulSpec = {
  batchShape: [2, 3],
  M: 65,
  N: 16,
  K: 33,
  a: { offset: 4, batchStrides: [6435, 2145], rowStride: 33, colStride: 1 },
  b: { offset: 0, batchStrides: [0, 528], rowStride: 1, colStride: 33 },
};

const ENTRY: TunedEntry = {
  options: { variant: "sg-buffer", tm: 8, tn: 4, ku: 4, aLoad: "lane4", bLoad: "lane" },
  variant: "sg-buffer s8 8x4x4",
  defaultMs: 0.2,
  bestMs: 0.1,
};

describe("matmul keys and candidates", () => {
  test("a key names the spec and epilogue and parses back", () => {
    const key = matmulKey(SPEC, "add");
    assert.deepEqual(parseMatmulKey(key), { spec: SPEC, epilogue: "add" });
    assert.notEqual(matmulKey({ ...SPEC, a: { ...SPEC.a, offset: 0 } }, "add"), key, "offsets decide vec4 loads: they are part of the key");
    assert.notEqual(matmulKey(SPEC, "none"), key);
    for (const bad of ["", "2|65x16|a0:1:1|b0:1:1|x", `${key}|extra`, key.replace("|add", "|")]) assert.equal(parseMatmulKey(bad), undefined, bad);
  });

  test("the default comes first, fully spelled out, and generates the default kernel", () => {
    const cands = matmulCandidates(SPEC, TARGET);
    assert.deepEqual(cands[0], resolveMatmulOptions(SPEC, TARGET));
    assert.equal(generateMatmul(SPEC, TARGET, cands[0]).wgsl, generateMatmul(SPEC, TARGET).wgsl);
    assert.ok(cands.length >= 3, JSON.stringify(cands));
    assert.equal(new Set(cands.map((c) => JSON.stringify(c))).size, cands.length, "no duplicates");
    assert.ok(!cands.some((c) => c.variant === "sg-texture"), "tuned kernels bind a storage buffer at 2 (texture kernels are not tuned)");
  });
});

describe("autotune cache", () => {
  const id = adapterIdentity(INFO, TARGET);
  const warnings = (): { lines: string[]; warn: (l: string) => void } => {
    const lines: string[] = [];
    return { lines, warn: (l) => lines.push(l) };
  };

  test("the key follows the adapter, its limits and the generator version", () => {
    const key = adapterKey(id);
    assert.equal(adapterKey(adapterIdentity({ ...INFO }, { ...TARGET })), key, "stable");
    assert.notEqual(adapterKey(adapterIdentity({ ...INFO, description: "llvmpipe: Mesa 25.1.0 (LLVM 19)" }, TARGET)), key);
    assert.notEqual(adapterKey(adapterIdentity({ ...INFO, device: "llvmpipe-512-bits" }, TARGET)), key);
    assert.notEqual(adapterKey(adapterIdentity(INFO, { ...TARGET, subgroupSize: 16, subgroupMaxSize: 16 })), key);
    assert.notEqual(adapterKey(adapterIdentity(INFO, { ...TARGET, maxWorkgroupStorage: 16384 })), key);
    assert.notEqual(adapterKey(adapterIdentity(INFO, TARGET, MATMUL_GENERATOR_VERSION + 1)), key);
  });

  test("entries saved for an identity load back for it", async () => {
    const file = cacheFile(id, join(dir, "roundtrip"));
    const w = warnings();
    assert.equal(loadTuning(file, id, w.warn).size, 0, "no file: nothing, silently");
    await saveTuning(file, id, new Map([[matmulKey(SPEC, "none"), ENTRY]]));
    assert.deepEqual(loadTuning(file, id, w.warn), new Map([[matmulKey(SPEC, "none"), ENTRY]]));
    assert.deepEqual(w.lines, []);
  });

  test("a corrupt file is ignored with a one-line warning", () => {
    const file = cacheFile(id, dir);
    for (const text of [
      "{ not json",
      "[]",
      JSON.stringify({ format: 1, identity: id, entries: { "not a key": ENTRY } }),
      JSON.stringify({ format: 1, identity: id, entries: { [matmulKey(SPEC, "none")]: { ...ENTRY, options: { tm: -3 } } } }),
    ]) {
      writeFileSync(file, text);
      const w = warnings();
      assert.equal(loadTuning(file, id, w.warn).size, 0, text);
      assert.equal(w.lines.length, 1, text);
      assert.match(w.lines[0], /ignoring .*\.json/);
      assert.ok(!w.lines[0].includes("\n"));
    }
    rmSync(file);
  });

  test("a file from another generator version or adapter is not used", async () => {
    const file = cacheFile(id, join(dir, "stale"));
    const entries = new Map([[matmulKey(SPEC, "none"), ENTRY]]);
    for (const other of [adapterIdentity(INFO, TARGET, MATMUL_GENERATOR_VERSION - 1), adapterIdentity({ ...INFO, description: "another GPU" }, TARGET)]) {
      assert.notEqual(cacheFile(other, join(dir, "stale")), file, "another identity has its own file");
      // the same entries under this identity's file name, as if copied or hash-collided
      rmSync(file, { force: true });
      await saveTuning(file, other, entries);
      const w = warnings();
      assert.equal(loadTuning(file, id, w.warn).size, 0);
      assert.equal(w.lines.length, 1);
      assert.match(w.lines[0], other.generator !== id.generator ? /generator version/ : /another adapter/);
    }
  });
});

describe("autotuned plans on the device", () => {
  const model = elaborate(loadProgram("spec/fixtures/train/micro.dehvf"), "TinyLM");
  // big enough that several matmuls are worth tuning (the smallest keep the default untimed)
  const dims = { B: 8, T: 16 };
  const cacheDir = join(dir, "device");
  // storage-buffer B only: kernels that read a constant B from a texture are not tuned
  // (kernels/matmul-epilogue.ts), and on lavapipe that would be every matmul of this forward
  const build = (matmulTuning?: MatmulTuning): Plan => buildPlan(model, dims, gpu.target, undefined, { matmulTuning, textureB: false });
  let first: Plan | undefined;

  /** Counts its calls; ranks candidates by a hash of the kernel's name (slower than BATCH_MS: one dispatch per batch). */
  const fakeTimer = (): { calls: number; timer: MatmulTimer } => {
    const t = {
      calls: 0,
      timer: (async (_device, run, dispatches) => {
        t.calls++;
        const h = [...run.kernel.variant].reduce((a, ch) => (a * 31 + ch.charCodeAt(0)) >>> 0, 7);
        return dispatches * (20 + (h % 13));
      }) as MatmulTimer,
    };
    return t;
  };
  const wgsl = (p: Plan): string[] => p.kernels.map((k) => k.wgsl);

  test("the cost model's choices spelled out give exactly the untuned plan", (t) => {
    if (!gpu.device(t)) return;
    const keys = new Set<string>();
    const untuned = build();
    assert.deepEqual(wgsl(build({ get: (k) => void keys.add(k) })), wgsl(untuned));
    assert.ok(keys.size > 0);
    const table = new Map([...keys].map((k) => [k, resolveMatmulOptions(parseMatmulKey(k)!.spec, gpu.target)]));
    assert.deepEqual(wgsl(build(table)), wgsl(untuned));
  });

  test("a tuned plan matches the interpreter; the cache replaces a corrupt file atomically", async (t) => {
    const g = gpu.device(t);
    if (!g) return;
    const file = cacheFile(adapterIdentity(g.info, targetFromGpu(g)), cacheDir);
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(file, "{ truncated");
    const inode = statSync(file).ino;
    const fake = fakeTimer();
    const warned: string[] = [];
    const logged: string[] = [];
    const plan = await tunedPlan(g, build, { cacheDir, timer: fake.timer, warn: (l) => warned.push(l), log: (l) => logged.push(l) });
    first = plan;
    assert.equal(warned.length, 1, warned.join("\n"));
    assert.match(warned[0], /ignoring .*not valid JSON/);
    assert.ok(fake.calls > 0);
    assert.match(logged.at(-1)!, /matmul shapes, \d+ tuned/);
    assert.ok(
      logged.some((l) => /default .* ms/.test(l)),
      "a line per tuned shape",
    );
    assert.notDeepEqual(wgsl(plan), wgsl(build()), "some matmul runs a non-default configuration");

    // atomic: renamed over the old file (a new inode), no temp file left beside it
    assert.notEqual(statSync(file).ino, inode);
    assert.deepEqual(readdirSync(cacheDir), [file.slice(cacheDir.length + 1)]);
    const saved = JSON.parse(readFileSync(file, "utf8"));
    assert.equal(saved.identity.generator, MATMUL_GENERATOR_VERSION);
    assert.ok(Object.keys(saved.entries).length > 0);

    const params = initAllParams(model, 0);
    const inputs = syntheticInputs(model, 0, dims);
    const want = runInterp(model, params, { seed: 0, dims, inputs });
    const ex = await PlanExecutor.create(g, plan, model.program.sources);
    try {
      ex.writeParams(params);
      const got = await ex.run(inputs);
      want.forEach((w, i) => compare(got[i], w, 1e-4, `tuned ${model.outputs[i].name}`, plan));
    } finally {
      ex.destroy();
    }
  });

  test("a second tune on the same adapter reads the cache and times nothing", async (t) => {
    const g = gpu.device(t);
    if (!g || !first) return t.skip("needs the first tune");
    const fake = fakeTimer();
    const warned: string[] = [];
    const plan = await tunedPlan(g, build, { cacheDir, timer: fake.timer, warn: (l) => warned.push(l), log: () => {} });
    assert.equal(fake.calls, 0);
    assert.deepEqual(warned, []);
    assert.deepEqual(wgsl(plan), wgsl(first));
  });

  test("the CLI: `run` with DEHVF_AUTOTUNE=1 plans from that cache, `info` shows it", (t) => {
    if (!gpu.device(t) || !first) return t.skip("needs the first tune");
    const dehvf = (env: Record<string, string>, ...args: string[]) =>
      spawnSync(process.execPath, ["bin/dehvf.js", ...args], {
        encoding: "utf8",
        timeout: 120_000,
        env: { ...process.env, DEHVF_AUTOTUNE_CACHE: cacheDir, DEHVF_TEXTURE_B: "0", ...env },
      });
    const run = dehvf({ DEHVF_AUTOTUNE: "1" }, "run", "spec/fixtures/train/micro.dehvf", "-m", "TinyLM", "--batch", String(dims.B), "--seq", String(dims.T));
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /autotune: \d+ matmul shapes, 0 tuned in [\d.]+ s, [1-9]\d* from the cache/);
    const info = dehvf({}, "info");
    assert.equal(info.status, 0, info.stderr);
    assert.match(info.stdout, new RegExp(`autotune +[1-9]\\d* tuned matmul shapes in ${cacheDir}/[0-9a-f]+\\.json`));
  });
});
