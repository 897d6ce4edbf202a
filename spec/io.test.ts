import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, mock, test } from "node:test";
import fc from "fast-check";
import sharp from "sharp";
import { recoverDirAtomic, writeDirAtomic, writeFileAtomic, writeFileAtomicStream, writeJsonAtomic } from "../io/atomic.ts";
import { buildLossPlotSvg, downsample, MAX_POINTS_PER_SERIES, writeLossPlot } from "../io/loss-plot.ts";
import { MetricsLog, type MetricsRecord, readMetrics, truncateAfterStep } from "../io/metrics-log.ts";
import { during, formatDuration, TrainingProgress } from "../io/progress.ts";
import { acquireRunLock, LOCK_FILE, RunLockedError } from "../io/run-lock.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../util/half-float.ts";
import { encodeHeader, openSafetensors, SafetensorsError, writeSafetensors, type Dtype, type TensorToWrite } from "../io/safetensors.ts";
import { fcRuns } from "./fc-runs.ts";
import { lossPlot } from "../train/loss-plot.ts";

let root = "";
let n = 0;
const fresh = (name: string) => path.join(root, `${n++}-${name}`);
const siblings = (p: string) => fs.readdirSync(path.dirname(p)).filter((f) => f !== path.basename(p) && f.startsWith(path.basename(p)));

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "dehvf-io-"));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** A pid no process can have (above Linux's pid_max), standing in for a writer that was killed. */
const DEAD_PID = 999_999_999;

describe("atomic writes", () => {
  test("writeFileAtomic creates and replaces, leaving no temp files", async () => {
    const p = fresh("a.txt");
    await writeFileAtomic(p, "one");
    await writeFileAtomic(p, new Uint8Array([116, 119, 111]));
    assert.equal(fs.readFileSync(p, "utf8"), "two");
    assert.deepEqual(siblings(p), []);
  });

  test("a failing writer leaves the old content and removes its temp file", async () => {
    const p = fresh("b.txt");
    await writeFileAtomic(p, "old");
    await assert.rejects(
      writeFileAtomicStream(p, async (h) => {
        await h.write("partial new content");
        throw new Error("killed mid-write");
      }),
      /killed mid-write/,
    );
    assert.equal(fs.readFileSync(p, "utf8"), "old");
    assert.deepEqual(siblings(p), []);
  });

  test("writeJsonAtomic round-trips", async () => {
    const p = fresh("c.json");
    await writeJsonAtomic(p, { step: 3, lr: 1e-4, tags: ["x"] });
    assert.deepEqual(JSON.parse(fs.readFileSync(p, "utf8")), { step: 3, lr: 1e-4, tags: ["x"] });
    await assert.rejects(writeJsonAtomic(p, undefined), /not JSON-serialisable/);
  });

  test("writeDirAtomic builds, then swaps a checkpoint directory into place", async () => {
    const d = fresh("ckpt");
    await writeDirAtomic(d, async (tmp) => {
      assert.match(path.basename(tmp), /^\d+-ckpt\.tmp-\d+-\d+$/);
      fs.writeFileSync(path.join(tmp, "step"), "1");
    });
    await writeDirAtomic(d, async (tmp) => {
      fs.mkdirSync(path.join(tmp, "sub"));
      fs.writeFileSync(path.join(tmp, "sub", "w"), "x");
      fs.writeFileSync(path.join(tmp, "step"), "2");
    });
    assert.equal(fs.readFileSync(path.join(d, "step"), "utf8"), "2");
    assert.equal(fs.readFileSync(path.join(d, "sub", "w"), "utf8"), "x");
    assert.deepEqual(siblings(d), []);
  });

  test("a failing build leaves the old checkpoint untouched", async () => {
    const d = fresh("ckpt");
    await writeDirAtomic(d, async (tmp) => fs.writeFileSync(path.join(tmp, "step"), "1"));
    await assert.rejects(
      writeDirAtomic(d, async (tmp) => {
        fs.writeFileSync(path.join(tmp, "step"), "2");
        throw new Error("out of disk");
      }),
      /out of disk/,
    );
    assert.equal(fs.readFileSync(path.join(d, "step"), "utf8"), "1");
    assert.deepEqual(siblings(d), []);
  });

  test("recovery after a kill: inside the swap window the old copy comes back; stale temp dirs go", async () => {
    const d = fresh("ckpt");
    // State after a kill between "rename old away" and "rename new in": only the .old copy exists.
    fs.mkdirSync(`${d}.old-${DEAD_PID}-7`);
    fs.writeFileSync(path.join(`${d}.old-${DEAD_PID}-7`, "step"), "41");
    fs.mkdirSync(`${d}.tmp-${DEAD_PID}-8`);
    fs.writeFileSync(path.join(`${d}.tmp-${DEAD_PID}-8`, "step"), "4");
    assert.equal(await recoverDirAtomic(d), "restored");
    assert.equal(fs.readFileSync(path.join(d, "step"), "utf8"), "41");
    assert.deepEqual(siblings(d), []);
    // A kill after the swap but before deleting .old: the new copy stays, the leftover is removed.
    fs.mkdirSync(`${d}.old-${DEAD_PID}-9`);
    assert.equal(await recoverDirAtomic(d), "intact");
    assert.deepEqual(siblings(d), []);
    assert.equal(await recoverDirAtomic(fresh("never-written")), "missing");
  });
});

// ---------------------------------------------------------------- safetensors

const f32Bytes = (...xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const u16Bytes = (...xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);

/** A file assembled by hand from the spec: u64 LE length, header text, data. */
function handBuilt(headerText: string, data: Uint8Array, declaredLength?: number): Uint8Array {
  const h = Buffer.from(headerText, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(declaredLength ?? h.length));
  return Buffer.concat([len, h, data]);
}

describe("safetensors", () => {
  test("writer output matches a hand-built file byte for byte", async () => {
    const p = fresh("hand.safetensors");
    await writeSafetensors(p, { b: { shape: [1], data: new Int32Array([7]) }, a: { shape: [2], data: new Float32Array([1, -2]) } }, { format: "pt" });
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}}';
    assert.equal(json.length, 139); // padded with 5 spaces to 144
    const expected = Buffer.concat([
      Buffer.from([144, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from(json + "     ", "utf8"),
      Buffer.from([0x00, 0x00, 0x80, 0x3f]), // 1.0f
      Buffer.from([0x00, 0x00, 0x00, 0xc0]), // -2.0f
      Buffer.from([0x07, 0x00, 0x00, 0x00]), // 7
    ]);
    assert.deepEqual(new Uint8Array(fs.readFileSync(p)), new Uint8Array(expected));
    assert.deepEqual(siblings(p), []);
  });

  test("reads a hand-built file (unpadded header, any key order) and converts F16/BF16 exactly", async () => {
    const p = fresh("hand2.safetensors");
    const f16 = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x8000];
    const bf16 = [0x3f80, 0xc000, 0x477f, 0x0001, 0x7f80, 0xff80, 0x7fc0, 0x8000];
    const header = JSON.stringify({
      z: { dtype: "BF16", shape: [2, 4], data_offsets: [20, 36] },
      h: { dtype: "F16", shape: [10], data_offsets: [0, 20] },
      __metadata__: { note: "hand" },
      i: { dtype: "I64", shape: [2], data_offsets: [36, 52] },
    });
    const i64 = new Uint8Array(new BigInt64Array([-5n, 1n << 30n]).buffer);
    fs.writeFileSync(p, handBuilt(header, Buffer.concat([u16Bytes(...f16), u16Bytes(...bf16), i64])));
    const r = await openSafetensors(p);
    try {
      assert.deepEqual(r.metadata, { note: "hand" });
      assert.deepEqual(r.names().sort(), ["h", "i", "z"]);
      assert.deepEqual(r.info("z").shape, [2, 4]);
      const h = await r.readF32("h");
      assert.deepEqual([...h.slice(0, 8)], [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, Infinity, -Infinity]);
      assert.ok(Number.isNaN(h[8]));
      assert.ok(Object.is(h[9], -0));
      const z = await r.readF32("z");
      assert.deepEqual([...z.slice(0, 6)], [1, -2, 65280, 2 ** -133, Infinity, -Infinity]);
      assert.ok(Number.isNaN(z[6]));
      assert.ok(Object.is(z[7], -0));
      assert.deepEqual([...(await r.readI32("i"))], [-5, 2 ** 30]);
      await assert.rejects(r.readI32("h"), /not an integer type/);
      await assert.rejects(r.readF32("nope"), (e: Error) => e instanceof SafetensorsError && e.message.includes(p) && e.message.includes('"nope"'));
    } finally {
      await r.close();
    }
  });

  test("half-precision encoders invert the decoders on every non-NaN bit pattern and round to nearest even", () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = f16ToF32(h);
      if (!Number.isNaN(v)) assert.equal(f32ToF16(v), h, `f16 0x${h.toString(16)}`);
      const b = bf16ToF32(h);
      if (!Number.isNaN(b)) assert.equal(f32ToBf16(b), h, `bf16 0x${h.toString(16)}`);
    }
    assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // tie → even
    assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
    assert.equal(f32ToF16(65520), 0x7c00); // rounds past the max finite value
    assert.equal(f32ToF16(2 ** -25), 0); // tie between 0 and the smallest subnormal → 0
    assert.equal(f32ToF16(1.5 * 2 ** -25), 1);
    assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
    assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80);
    assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82);
    assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  });

  const dtypeArb = fc.constantFrom<Dtype>("F32", "I32", "F16", "BF16");
  const shapeArb = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });
  const tensorArb = fc.tuple(dtypeArb, shapeArb, fc.integer({ min: 0, max: 2 ** 31 - 1 })).map(([dtype, shape, seed]) => {
    const count = shape.reduce((a, b) => a * b, 1);
    let s = seed;
    const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
    if (dtype === "I32") return { dtype, shape, data: Int32Array.from({ length: count }, () => next() | 0) };
    // Values the dtype represents exactly, so the round trip can compare exactly.
    const data = Float32Array.from({ length: count }, () => {
      const bits = next() & 0xffff;
      return dtype === "F16" ? f16ToF32(bits & 0xfbff) : dtype === "BF16" ? bf16ToF32(bits & 0xff7f) : (next() | 0) / 2 ** 20;
    });
    return { dtype, shape, data };
  });

  test("round trip: random tensors, dtypes, shapes and metadata", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9_.]{0,12}$/), tensorArb, { maxKeys: 6 }),
        fc.dictionary(
          fc.string({ maxLength: 8 }).filter((k) => k !== "__proto__"),
          fc.string({ maxLength: 16 }),
          { maxKeys: 3 },
        ),
        async (tensors, metadata) => {
          const p = fresh("rt.safetensors");
          await writeSafetensors(p, tensors as Record<string, TensorToWrite>, metadata);
          const r = await openSafetensors(p);
          try {
            assert.deepEqual(r.metadata, { ...metadata });
            assert.deepEqual(r.names().sort(), Object.keys(tensors).sort());
            for (const [name, t] of Object.entries(tensors)) {
              const got = await r.read(name);
              assert.equal(got.dtype, t.dtype);
              assert.deepEqual(got.shape, t.shape);
              assert.deepEqual(got.data, t.data);
              assert.equal(r.info(name).fileOffset % 2, 0, "tensors stay aligned");
            }
          } finally {
            await r.close();
            fs.rmSync(p);
          }
        },
      ),
      fcRuns(60),
    );
  });

  test("reading one tensor reads only its bytes, not the whole file", async () => {
    const p = fresh("big.safetensors");
    const big = new Float32Array(4 << 20); // 16 MiB
    big[big.length - 1] = 3;
    await writeSafetensors(p, { "a.big": { shape: [big.length], data: big }, "z.small": { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } });
    // Spy on every FileHandle read so the check does not rely on the reader's own bookkeeping.
    const probe = await fsp.open(p, "r");
    const spy = mock.method(Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> }, "read");
    await probe.close();
    const requested = () => spy.mock.calls.reduce((sum, c) => sum + (c.arguments[2] as number), 0);
    const r = await openSafetensors(p);
    try {
      const afterHeader = requested();
      assert.equal(afterHeader, r.bytesRead);
      assert.ok(afterHeader < 256, `header read: ${afterHeader}`);
      assert.ok(r.info("z.small").fileOffset > 16 << 20, "small tensor sits after the big one");
      assert.deepEqual([...(await r.readF32("z.small"))], [1, 2, 3, 4]);
      assert.equal(requested() - afterHeader, 16);
      assert.equal(r.bytesRead, requested());
      assert.ok(r.fileSize > 16 << 20);
    } finally {
      spy.mock.restore();
      await r.close();
    }
  });

  test("the writer encodes F32 data to F16/BF16 on request", async () => {
    const p = fresh("half.safetensors");
    await writeSafetensors(p, {
      h: { shape: [3], dtype: "F16", data: new Float32Array([1 / 3, 70000, -0.5]) },
      b: { shape: [1], dtype: "BF16", data: new Float32Array([Math.PI]) },
    });
    const r = await openSafetensors(p);
    assert.equal(r.info("h").byteLength, 6);
    assert.deepEqual([...(await r.readF32("h"))], [f16ToF32(0x3555), Infinity, -0.5]);
    assert.deepEqual([...(await r.readF32("b"))], [3.140625]);
    await r.close();
    await assert.rejects(writeSafetensors(p, { x: { shape: [3], data: new Float32Array(2) } }), /3 elements but data has 2/);
    await assert.rejects(writeSafetensors(p, { x: { shape: [1], dtype: "I64", data: new Float32Array(1) } }), /cannot be written as I64/);
  });

  describe("corrupted files give errors naming the file and tensor", () => {
    const cases: [string, () => Uint8Array, RegExp][] = [
      ["too short", () => new Uint8Array(5), /shorter than the 8-byte header length/],
      ["header length past EOF", () => handBuilt("{}", new Uint8Array(0), 4096), /runs past the end of the file/],
      ["absurd header length", () => handBuilt("{}", new Uint8Array(0), 2 ** 40), /exceeds the 100000000-byte limit/],
      ["not JSON", () => handBuilt("{nope", new Uint8Array(0)), /not valid JSON/],
      ["not an object", () => handBuilt("[1]  ", new Uint8Array(0)), /must start with '\{'/],
      ["unknown dtype", () => handBuilt('{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}', f32Bytes(1)), /tensor "w"\): unknown dtype "F12"/],
      ["negative dim", () => handBuilt('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', f32Bytes(1)), /tensor "w"\): shape must be/],
      [
        "size mismatch",
        () => handBuilt('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', f32Bytes(1, 2)),
        /tensor "w"\): shape \[3\] × F32 needs 12 bytes but data_offsets \[0, 8\] span 8/,
      ],
      [
        "offset past data",
        () => handBuilt('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32Bytes(1)),
        /tensor "w"\): .*past the end of the data \(4 bytes\)/,
      ],
      ["end before begin", () => handBuilt('{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}', f32Bytes(1)), /end before begin/],
      [
        "overlap",
        () => handBuilt('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32Bytes(1, 2)),
        /tensor "b"\): data overlaps/,
      ],
      ["hole", () => handBuilt('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32Bytes(1, 2)), /tensor "a"\): hole in the data/],
      [
        "trailing bytes",
        () => handBuilt('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32Bytes(1, 2)),
        /data section is 8 bytes but tensors cover 4/,
      ],
      ["metadata not strings", () => handBuilt('{"__metadata__":{"epoch":3}}', new Uint8Array(0)), /__metadata__\["epoch"\] must be a string/],
      ["invalid UTF-8", () => handBuilt('{"\uFFFD":1}', new Uint8Array(0)).map((b, i) => (i === 10 ? 0xff : b)), /not valid UTF-8/],
    ];
    for (const [name, build, message] of cases) {
      test(name, async () => {
        const p = fresh("bad.safetensors");
        fs.writeFileSync(p, build());
        await assert.rejects(openSafetensors(p), (e: Error) => {
          assert.ok(e instanceof SafetensorsError, String(e));
          assert.ok(e.message.startsWith(p), e.message);
          assert.match(e.message, message);
          return true;
        });
      });
    }
  });

  test("random damage to a valid file is either harmless or a SafetensorsError", async () => {
    const p = fresh("good.safetensors");
    await writeSafetensors(
      p,
      {
        w: { shape: [2, 3], data: new Float32Array(6).fill(0.5) },
        b: { shape: [3], dtype: "F16", data: new Float32Array(3) },
        i: { shape: [1], data: new Int32Array([9]) },
      },
      { k: "v" },
    );
    const good = new Uint8Array(fs.readFileSync(p));
    const q = fresh("fuzz.safetensors");
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.nat({ max: good.length }),
        async (edits, cut) => {
          const bytes = good.slice(0, Math.max(cut, good.length - 8));
          for (const [at, v] of edits) if (at < bytes.length) bytes[at] = v;
          fs.writeFileSync(q, bytes);
          let r;
          try {
            r = await openSafetensors(q);
          } catch (e) {
            assert.ok(e instanceof SafetensorsError, String(e));
            return;
          }
          try {
            for (const name of r.names()) await r.readBytes(name);
          } finally {
            await r.close();
          }
        },
      ),
      fcRuns(300),
    );
  });

  test("encodeHeader pads the JSON with spaces to a multiple of 8", () => {
    for (let len = 0; len < 10; len++) {
      const bytes = encodeHeader([{ name: "x".repeat(len + 1), dtype: "U8", shape: [0], byteLength: 0 }]);
      const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
      assert.equal(n % 8, 0);
      assert.equal(bytes.length, 8 + n);
      assert.match(Buffer.from(bytes.subarray(8)).toString(), /^\{.*\} *$/);
    }
  });
});

// ---------------------------------------------------------------- metrics log

describe("metrics log", () => {
  test("appends one line per record; NaN and infinities survive", () => {
    const p = fresh("m.jsonl");
    const log = MetricsLog.open(p);
    log.append({ step: 1, loss: 2.5 });
    log.append({ step: 2, loss: NaN, gradNorm: Infinity, split: "train" });
    log.close();
    assert.equal(fs.readFileSync(p, "utf8").split("\n").length, 3);
    const rs = readMetrics(p);
    assert.deepEqual(rs[0], { step: 1, loss: 2.5 });
    assert.ok(Number.isNaN(rs[1].loss as number));
    assert.equal(rs[1].gradNorm, Infinity);
    assert.deepEqual(readMetrics(fresh("absent.jsonl")), []);
  });

  test("a torn last line is ignored by readers and cut before the next append", () => {
    const p = fresh("m.jsonl");
    fs.writeFileSync(p, '{"step":1,"loss":1}\n{"step":2,"loss":0.9}\n{"step":3,"lo');
    assert.deepEqual(
      readMetrics(p).map((r) => r.step),
      [1, 2],
    );
    // Complete JSON without its newline is still torn: an append would glue onto it.
    fs.writeFileSync(p, '{"step":1,"loss":1}\n{"step":2,"loss":0.9}');
    assert.deepEqual(
      readMetrics(p).map((r) => r.step),
      [1],
    );
    const log = MetricsLog.open(p);
    log.append({ step: 2, loss: 0.8 });
    log.close();
    assert.equal(fs.readFileSync(p, "utf8"), '{"step":1,"loss":1}\n{"step":2,"loss":0.8}\n');
  });

  test("damage before the last line is an error with its line number", () => {
    const p = fresh("m.jsonl");
    fs.writeFileSync(p, '{"step":1}\n{"step":\n{"step":3}\n');
    assert.throws(() => readMetrics(p), /m\.jsonl:2: invalid JSON/);
    fs.writeFileSync(p, '{"loss":1}\n');
    assert.throws(() => readMetrics(p), /m\.jsonl:1: .*numeric "step"/);
  });

  test("truncateAfterStep drops later steps (and a torn tail) so a resumed run logs no duplicates", () => {
    const p = fresh("m.jsonl");
    const log = MetricsLog.open(p);
    for (let s = 1; s <= 5; s++) log.append({ step: s, loss: 1 / s });
    log.append({ step: 4, split: "eval", cider: 0.5 });
    log.close();
    fs.appendFileSync(p, '{"step":6,');
    assert.equal(truncateAfterStep(p, 3), 3);
    const resumed = MetricsLog.open(p);
    for (let s = 4; s <= 6; s++) resumed.append({ step: s, loss: 1 / s });
    resumed.close();
    const steps = readMetrics(p).map((r) => r.step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
    assert.equal(truncateAfterStep(fresh("absent.jsonl"), 3), 0);
  });
});

// ---------------------------------------------------------------- loss plot

describe("loss plot", () => {
  const opts = { title: "Loss & <eval>", xLabel: "step", yLabel: "loss" };

  async function checkPng(p: string, w: number, h: number) {
    const meta = await sharp(p).metadata();
    assert.equal(meta.format, "png");
    assert.equal(meta.width, w);
    assert.equal(meta.height, h);
    const stats = await sharp(p).stats();
    // Non-blank: something darker than the white background was drawn.
    assert.ok(
      stats.channels.slice(0, 3).some((c) => c.min < 100),
      JSON.stringify(stats.channels.map((c) => c.min)),
    );
  }

  test("renders a PNG with lines, eval markers, ticks and legend", async () => {
    const p = fresh("loss.png");
    const train: [number, number][] = Array.from({ length: 300 }, (_, i) => [i, 3 * Math.exp(-i / 80) + 0.1 * Math.sin(i)]);
    const evalPts: [number, number][] = [
      [0, 3.1],
      [100, 1.2],
      [200, 0.6],
      [299, 0.4],
    ];
    await writeLossPlot(
      p,
      [
        { name: "train", points: train },
        { name: "eval", points: evalPts, style: "markers" },
      ],
      opts,
    );
    await checkPng(p, 960, 540);
    assert.deepEqual(siblings(p), []);
    const svg = buildLossPlotSvg(
      [
        { name: "train", points: train },
        { name: "eval", points: evalPts, style: "markers" },
      ],
      opts,
    );
    assert.match(svg, /Loss &amp; &lt;eval&gt;/);
    assert.equal((svg.match(/<polyline/g) ?? []).length, 1);
    assert.equal((svg.match(/<circle/g) ?? []).length, 5); // 4 eval points + legend swatch
    assert.match(svg, />100</);
  });

  test("one point, empty series and a log axis all render", async () => {
    const p = fresh("one.png");
    await writeLossPlot(
      p,
      [
        { name: "train", points: [[5, 2]] },
        { name: "empty", points: [] },
      ],
      { ...opts, logY: true, width: 400, height: 300 },
    );
    await checkPng(p, 400, 300);
    const svg = buildLossPlotSvg(
      [
        {
          name: "t",
          points: [
            [1, 1000],
            [2, 0.01],
          ],
        },
      ],
      { ...opts, logY: true },
    );
    for (const label of [">1000<", ">100<", ">10<", ">1<", ">0.1<", ">0.01<"]) assert.ok(svg.includes(label), label);
  });

  test("rejects NaN/infinite input and non-positive values on a log axis", async () => {
    await assert.rejects(
      writeLossPlot(
        fresh("nan.png"),
        [
          {
            name: "train",
            points: [
              [0, 1],
              [1, NaN],
            ],
          },
        ],
        opts,
      ),
      /series "train" point 1 is \(1, NaN\)/,
    );
    assert.throws(() => buildLossPlotSvg([{ name: "t", points: [[Infinity, 1]] }], opts), RangeError);
    assert.throws(() => buildLossPlotSvg([{ name: "t", points: [[0, 0]] }], { ...opts, logY: true }), /log scale/);
  });

  test("many points are downsampled to the cap, keeping spikes", async () => {
    const pts: [number, number][] = Array.from({ length: 100_000 }, (_, i) => [i, 1 + (i === 54_321 ? 50 : 0) - (i === 7 ? 0.9 : 0)]);
    const d = downsample(pts);
    assert.ok(d.length <= MAX_POINTS_PER_SERIES);
    assert.ok(d.some(([x, y]) => x === 54_321 && y === 51));
    assert.ok(d.some(([x, y]) => x === 7 && Math.abs(y - 0.1) < 1e-12));
    assert.ok(
      d.every(([x], i) => i === 0 || x > d[i - 1][0]),
      "x order kept",
    );
    const svg = buildLossPlotSvg([{ name: "train", points: pts }], opts);
    const polyline = /points="([^"]*)"/.exec(svg)![1];
    assert.ok(polyline.split(" ").length <= MAX_POINTS_PER_SERIES);
    const p = fresh("many.png");
    await writeLossPlot(p, [{ name: "train", points: pts }], opts);
    await checkPng(p, 960, 540);
  });

  test("a stage's loss.png: training loss, held-out accuracy on a right axis with chance, learning rate in a panel below", async () => {
    const recs: MetricsRecord[] = [];
    for (let step = 1; step <= 300; step++) {
      recs.push({ step, loss: 3 * Math.exp(-step / 80) + 0.5, grad_norm: 1, param_norm: 2, lr: step <= 30 ? (0.005 * step) / 30 : 0.005 * (1 - step / 400) });
      if (step % 100 === 0) recs.push({ step, eval: { split: "val", accuracy: 0.3 + step / 2000, chance: 0.3125, questions: 256 } });
    }
    const plot = lossPlot(recs, "finetune (TinyVQA)")!;
    const svg = buildLossPlotSvg(plot.series, plot.opts);
    for (const name of ["training loss", "val accuracy (right axis)", "chance 31.3%", "learning rate"]) assert.ok(svg.includes(`>${name}<`), `legend: ${name}`);
    assert.ok(svg.includes(">training loss (log)<") && svg.includes(">val accuracy<"), "both axes of the main panel are labelled");
    for (const tick of [">35%<", ">40%<", ">45%<"]) assert.ok(svg.includes(tick), `accuracy tick ${tick}`);
    assert.equal((svg.match(/<clipPath/g) ?? []).length, 2, "a main panel and the learning-rate panel");
    assert.equal((svg.match(/<polyline/g) ?? []).length, 4, "loss, accuracy, chance, learning rate");
    assert.equal((svg.match(/<circle/g) ?? []).length, 4, "3 evaluated steps + the legend's swatch");
    assert.equal((svg.match(/stroke-dasharray/g) ?? []).length, 2, "the chance level and its swatch are dashed");
    const p = fresh("stage-loss.png");
    await writeLossPlot(p, plot.series, plot.opts);
    await checkPng(p, 960, 540);

    // classification reports item accuracy; an old log with losses only draws the loss alone
    const classify = lossPlot(
      [
        { step: 1, loss: 2, lr: 1e-3 },
        { step: 2, loss: 1.5, lr: 1e-3 },
        { step: 2, eval: { split: "val", item_accuracy: 0.5, chance: 0.1 } },
      ],
      "v",
    )!;
    assert.ok(buildLossPlotSvg(classify.series, classify.opts).includes(">val item accuracy (right axis)<"));
    const bare = lossPlot(
      [
        { step: 1, loss: 2 },
        { step: 2, loss: 1 },
      ],
      "old",
    )!;
    assert.deepEqual(
      bare.series.map((s) => s.name),
      ["training loss"],
    );
    assert.equal(bare.opts.right, undefined);
    assert.equal(bare.opts.lower, undefined);
    assert.equal(lossPlot([{ step: 1, loss: NaN }], "diverged"), undefined, "nothing to draw");
  });
});

// ---------------------------------------------------------------- progress

class FakeStream {
  chunks: string[] = [];
  constructor(
    readonly isTTY: boolean,
    readonly columns = 120,
  ) {}
  write(s: string) {
    this.chunks.push(s);
    return true;
  }
  get text() {
    return this.chunks.join("");
  }
}

describe("training progress", () => {
  test("non-TTY: plain lines every N seconds, no control codes, a final line on stop", () => {
    const out = new FakeStream(false);
    let t = 1_000_000;
    const p = new TrainingProgress({ total: 100, stage: "stage1", stream: out, now: () => t, plainEverySeconds: 10, smoothing: 0 });
    for (let s = 1; s <= 25; s++) {
      t += 1000;
      p.update(s, { loss: 2 - s / 100, tokens: 512 });
    }
    p.stop();
    p.stop();
    const lines = out.text.trimEnd().split("\n");
    assert.deepEqual(
      lines.map((l) => /step (\d+)\//.exec(l)![1]),
      ["1", "11", "21", "25"],
    );
    assert.ok(!out.text.includes("\x1b"), "no escape codes");
    assert.equal(lines[3], "[stage1] step 25/100 (25.0%) | loss 1.7500 | 512 tok/s | elapsed 25s | eta 1m15s");
  });

  test("non-TTY: every N steps too; log() prints plainly; ETA uses only this run's steps after resume", () => {
    const out = new FakeStream(false);
    let t = 0;
    const p = new TrainingProgress({ total: 1000, startStep: 900, stream: out, now: () => t, plainEverySeconds: 3600, plainEverySteps: 50 });
    for (let s = 901; s <= 1000; s++) {
      t += 2000;
      p.update(s, { loss: 1 });
      if (s === 950) {
        assert.equal(formatDuration(p.snapshot().etaMs), "1m40s");
        p.log("eval: cider 0.42");
      }
    }
    p.stop();
    const lines = out.text.trimEnd().split("\n");
    assert.equal(lines.length, 4, out.text); // 901 (first), the log line, 951 (50 steps on), 1000 (last); nothing more at stop
    assert.equal(lines[1], "eval: cider 0.42");
    assert.match(lines[2], /step 951\//);
    assert.match(lines[3], /step 1000\/1000 \(100\.0%\) \| loss 1\.0000 \| -- tok\/s \| elapsed 3m20s \| eta 0s/);
  });

  test("TTY: draws with cli-progress and stop() leaves the cursor visible on a new line", () => {
    const out = new FakeStream(true);
    const exitListeners = process.listenerCount("exit");
    const p = new TrainingProgress({ total: 10, stage: "lora", stream: out });
    assert.equal(process.listenerCount("exit"), exitListeners + 1);
    p.update(3, { loss: 0.5, tokens: 100 });
    p.log("a message");
    p.stop();
    assert.equal(process.listenerCount("exit"), exitListeners);
    assert.match(out.text, /lora \|/);
    assert.match(out.text, /3\/10/);
    const hide = out.text.indexOf("\x1b[?25l");
    const show = out.text.lastIndexOf("\x1b[?25h");
    assert.ok(hide >= 0 && show > hide, "cursor hidden while running, shown after");
    assert.ok(out.text.endsWith("\n"));
  });

  test("the first step (it pays for pipeline compilation) and pauses stay out of the rate: no wild ETA at step 1", () => {
    const out = new FakeStream(false);
    let t = 0;
    const p = new TrainingProgress({ total: 1000, stream: out, now: () => t, heartbeat: false });
    t += 80_000;
    p.update(1, { loss: 2 });
    assert.ok(Number.isNaN(p.snapshot().etaMs), "nothing to estimate from after one step");
    assert.match(p.formatLine(), /eta --$/);
    t += 500;
    p.update(2, { loss: 2 });
    assert.equal(formatDuration(p.snapshot().etaMs), "8m19s"); // 998 steps at 0.5 s, not 1000 × 80 s
    p.pause("evaluating on 256 held-out questions");
    t += 60_000;
    p.resume();
    t += 500;
    p.update(3, { loss: 2 });
    assert.equal(formatDuration(p.snapshot().etaMs), "8m19s"); // 997 steps at 0.5 s: the evaluation is not a step
    assert.match(out.text, /^ {2}evaluating on 256 held-out questions …$/m);
    p.stop();
  });

  /** Blocks the main thread as a long shader compile inside a Dawn call does: no timer of it fires. */
  const block = (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
  };
  const settle = () => new Promise((done) => setTimeout(done, 400));

  test("never silent for longer than the interval, even while the main thread is blocked: the first step, a pause and a slow step say so", async () => {
    const out = new FakeStream(false);
    const file = fresh("heartbeat.txt");
    const fd = fs.openSync(file, "w");
    try {
      const p = new TrainingProgress({ total: 10, stage: "s", stream: out, plainEverySeconds: 0.1, heartbeat: fd });
      await settle(); // the worker starts
      block(500);
      assert.match(
        fs.readFileSync(file, "utf8"),
        /^\[s\] step 1\/10 running: a run's first step also compiles the kernels' shaders on this device \(cached for later runs\) \(\d+s\)$/m,
      );
      p.update(1, { loss: 1 });
      await p.during("evaluating on 8 held-out questions", async () => block(500));
      await settle();
      assert.match(fs.readFileSync(file, "utf8"), /^ {2}… still evaluating on 8 held-out questions \(\d+s\)$/m);
      block(500);
      await settle();
      assert.match(fs.readFileSync(file, "utf8"), /^\[s\] step 2\/10 running, after 1 done \(\d+s\)$/m, "a slow step says so");
      p.stop();
    } finally {
      fs.closeSync(fd);
    }
  });

  test("during(): says what long work is doing at once, then that it is still going, with how far it is", async () => {
    const lines: string[] = [];
    const file = fresh("during.txt");
    const fd = fs.openSync(file, "w");
    let done = 0;
    try {
      const r = await during(
        (l) => lines.push(l),
        "evaluating on 8 questions",
        async () => {
          for (; done < 5; done++) await new Promise((ok) => setTimeout(ok, 150));
          block(400);
          return 42;
        },
        { note: "test split", everySeconds: 0.1, status: () => `${done} of 5 decoded`, fd },
      );
      assert.equal(r, 42);
      assert.deepEqual(lines, ["evaluating on 8 questions (test split) …"]);
      await settle();
      const beats = fs.readFileSync(file, "utf8").trimEnd().split("\n");
      assert.ok(beats.length >= 3 && beats.every((l) => /^ {2}… still evaluating on 8 questions(: \d of 5 decoded)? \(\d+s\)$/.test(l)), beats.join("\n"));
      assert.ok(
        beats.some((l) => / \d of 5 decoded/.test(l)),
        "the status told before the main thread blocked",
      );
    } finally {
      fs.closeSync(fd);
    }
  });

  test("formatDuration", () => {
    assert.deepEqual([0, 42_000, 187_000, 7_500_000, NaN].map(formatDuration), ["0s", "42s", "3m07s", "2h05m", "--"]);
  });
});

describe("run lock", () => {
  const lockWith = (owner: Record<string, unknown>) => {
    const dir = fresh("out");
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, LOCK_FILE),
      JSON.stringify({ host: os.hostname(), boot: null, start: null, since: "2026-01-01T00:00:00Z", command: "dehvf train x", ...owner }),
    );
    return dir;
  };

  test("a second run on the same directory is refused with who holds it; release frees it", () => {
    const dir = fresh("out");
    const lock = acquireRunLock(dir, "dehvf train a");
    assert.throws(
      () => acquireRunLock(dir, "dehvf train b"),
      (e: unknown) => e instanceof RunLockedError && /in use by another dehvf run \(pid \d+ on .*dehvf train a\)/.test((e as Error).message),
    );
    lock.release();
    assert.ok(!fs.existsSync(path.join(dir, LOCK_FILE)));
    acquireRunLock(dir, "dehvf train b").release();
  });

  test("a dead owner's lock is taken over", () => {
    const lock = acquireRunLock(lockWith({ pid: DEAD_PID }), "dehvf train");
    assert.equal(lock.tookOver, `process ${DEAD_PID} is gone`);
    lock.release();
  });

  test("a live pid is not enough: a lock whose process started at another time (pid reused) or in another boot is taken over", () => {
    const reused = acquireRunLock(lockWith({ pid: process.ppid, start: "1" }), "dehvf train");
    assert.equal(reused.tookOver, `pid ${process.ppid} now belongs to another process`);
    reused.release();
    if (fs.existsSync("/proc/sys/kernel/random/boot_id")) {
      const rebooted = acquireRunLock(lockWith({ pid: process.ppid, boot: "another-boot" }), "dehvf train");
      assert.equal(rebooted.tookOver, "the machine restarted since");
      rebooted.release();
    }
  });

  test("a live owner on this machine keeps its lock; release is idempotent", () => {
    const dir = lockWith({ pid: process.ppid });
    assert.throws(() => acquireRunLock(dir, "dehvf train"), RunLockedError);
    const mine = acquireRunLock(fresh("out"), "dehvf train");
    mine.release();
    mine.release();
  });
});
