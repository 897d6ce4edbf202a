import { constants as bufferConstants } from "node:buffer";
import * as fsp from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import { writeFileAtomicStream } from "./atomic.ts";
import { withPath } from "./errno.ts";
import { UserFacingError } from "../util/user-facing-error.ts";

/*
 * safetensors (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of
 * JSON header, then the data buffer. Tensors are read by offset on demand because real
 * checkpoints are GBs and a PEFT run only needs some of them at a time.
 */

export type Dtype = "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "I16" | "U16" | "F16" | "BF16" | "I32" | "U32" | "F32" | "I64" | "U64" | "F64";

export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** Same cap as the reference implementation: a larger header is a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Reads and writes are split so no single fs call exceeds what Node accepts (2 GiB - 1). */
const READ_CHUNK = 1 << 28;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Absolute position in the file. */
  readonly fileOffset: number;
  readonly byteLength: number;
}

const located = (file: string, message: string, tensor?: string) => `${file}${tensor === undefined ? "" : ` (tensor "${tensor}")`}: ${message}`;

/** The file is not valid safetensors, or does not hold what was asked of it: the user's file to fix. */
export class SafetensorsError extends UserFacingError {
  constructor(file: string, message: string, tensor?: string) {
    super(located(file, message, tensor));
    this.name = "SafetensorsError";
  }
}

/** The writer was called with data it cannot store: a bug in the caller, not in any file. */
const misuse = (file: string, message: string, tensor?: string) => new Error(located(file, message, tensor));

if (endianness() !== "LE") throw new Error("io/safetensors.ts assumes a little-endian host");

function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Parses and validates a header; `dataBytes` is the size of the data section (file size - 8 - N). */
export function parseHeader(
  file: string,
  headerText: string,
  dataBytes: number,
): { tensors: TensorInfo[]; metadata: Record<string, string>; dataStart: number } {
  let json: unknown;
  try {
    json = JSON.parse(headerText);
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new SafetensorsError(file, "header must be a JSON object");
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const dataStart = 8 + Buffer.byteLength(headerText, "utf8");
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new SafetensorsError(file, "__metadata__ must be an object of strings");
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== "string") throw new SafetensorsError(file, `__metadata__["${k}"] must be a string, got ${typeof s}`);
        metadata[k] = s;
      }
      continue;
    }
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new SafetensorsError(file, "entry must be an object", name);
    const { dtype, shape, data_offsets } = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(dtype)) throw new SafetensorsError(file, `unknown dtype ${JSON.stringify(dtype)}`, name);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`, name);
    }
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new SafetensorsError(file, `data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(data_offsets)}`, name);
    }
    const [begin, end] = data_offsets as [number, number];
    if (end < begin) throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] end before begin`, name);
    if (end > dataBytes) throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] past the end of the data (${dataBytes} bytes)`, name);
    const numel = numelOf(shape as number[]);
    const expected = numel * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected)) throw new SafetensorsError(file, `shape [${shape.join(", ")}] is too large`, name);
    if (expected !== end - begin) {
      throw new SafetensorsError(
        file,
        `shape [${shape.join(", ")}] × ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
        name,
      );
    }
    tensors.push({ name, dtype, shape: Object.freeze([...(shape as number[])]), fileOffset: dataStart + begin, byteLength: end - begin });
  }
  // The format requires the data to be fully covered with no holes or overlaps.
  const sorted = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset || a.byteLength - b.byteLength);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.fileOffset < cursor)
      throw new SafetensorsError(
        file,
        `data overlaps the previous tensor (begins at ${t.fileOffset - dataStart}, previous ends at ${cursor - dataStart})`,
        t.name,
      );
    if (t.fileOffset > cursor)
      throw new SafetensorsError(file, `hole in the data before this tensor (bytes ${cursor - dataStart}..${t.fileOffset - dataStart} unused)`, t.name);
    cursor += t.byteLength;
  }
  if (cursor - dataStart !== dataBytes) {
    throw new SafetensorsError(file, `data section is ${dataBytes} bytes but tensors cover ${cursor - dataStart}`);
  }
  return { tensors, metadata, dataStart };
}

// ---- half-precision conversion ----

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE 754 binary16 bits → number (exact). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** bfloat16 bits → number (exact: bf16 is the top half of an f32). */
export function bf16ToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/** number → binary16 bits, round to nearest even, overflow to ±inf. */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const f = u32Scratch[0];
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** number → bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const f = u32Scratch[0];
  if ((f & 0x7f800000) === 0x7f800000 && f & 0x7fffff) return ((f >>> 16) | 0x40) & 0xffff;
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

// ---- reader ----

export class SafetensorsReader {
  /** Bytes read from the file so far (header included): lets callers and tests see reads stay local. */
  bytesRead = 0;
  private readonly byName: Map<string, TensorInfo>;

  private constructor(
    readonly path: string,
    private handle: FileHandle | undefined,
    readonly tensors: readonly TensorInfo[],
    readonly metadata: Readonly<Record<string, string>>,
    readonly fileSize: number,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  static async open(file: string): Promise<SafetensorsReader> {
    const handle = await fsp.open(file, "r");
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new SafetensorsError(file, `not a regular file${st.isDirectory() ? " (a directory)" : ""}`);
      const size = st.size;
      if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await readExactly(handle, lenBuf, 0, file);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      const headerLen = Number(n);
      if (8 + headerLen > size) throw new SafetensorsError(file, `header length ${headerLen} runs past the end of the file (${size} bytes)`);
      const headerBuf = Buffer.alloc(headerLen);
      await readExactly(handle, headerBuf, 8, file);
      if (headerLen === 0 || headerBuf[0] !== 0x7b /* { */) throw new SafetensorsError(file, "header must start with '{'");
      let headerText: string;
      try {
        headerText = new TextDecoder("utf-8", { fatal: true }).decode(headerBuf);
      } catch {
        throw new SafetensorsError(file, "header is not valid UTF-8");
      }
      const { tensors, metadata } = parseHeader(file, headerText, size - 8 - headerLen);
      const r = new SafetensorsReader(file, handle, tensors, metadata, size);
      r.bytesRead = 8 + headerLen;
      return r;
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  names(): string[] {
    return this.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new SafetensorsError(this.path, "no such tensor", name);
    return t;
  }

  /** The tensor's bytes, exactly as stored (little-endian), in a fresh aligned buffer. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (!this.handle) throw misuse(this.path, "reader is closed", name);
    if (t.byteLength > bufferConstants.MAX_LENGTH) {
      throw new SafetensorsError(this.path, `${t.byteLength} bytes is more than one buffer can hold (${bufferConstants.MAX_LENGTH})`, name);
    }
    const out = new Uint8Array(t.byteLength);
    await readExactly(this.handle, out, t.fileOffset, this.path, name);
    this.bytesRead += t.byteLength;
    return out;
  }

  /** Floating tensors (F32, F16, BF16, F64) as Float32Array; F16/BF16 are widened exactly. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    switch (t.dtype) {
      case "F32":
        return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
      case "F16": {
        const h = new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2);
        const out = new Float32Array(h.length);
        for (let i = 0; i < h.length; i++) out[i] = f16ToF32(h[i]);
        return out;
      }
      case "BF16": {
        const h = new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2);
        const out = new Uint32Array(h.length);
        for (let i = 0; i < h.length; i++) out[i] = h[i] << 16;
        return new Float32Array(out.buffer);
      }
      case "F64":
        return Float32Array.from(new Float64Array(bytes.buffer, 0, bytes.byteLength / 8));
      default:
        throw new SafetensorsError(this.path, `dtype ${t.dtype} is not a float type; use readI32 or readBytes`, name);
    }
  }

  /** Integer tensors as Int32Array; 64-bit values must fit in 32 bits. */
  async readI32(name: string): Promise<Int32Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    switch (t.dtype) {
      case "I32":
        return new Int32Array(bytes.buffer, 0, bytes.byteLength / 4);
      case "I16":
        return Int32Array.from(new Int16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case "U16":
        return Int32Array.from(new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case "I8":
        return Int32Array.from(new Int8Array(bytes.buffer));
      case "U8":
      case "BOOL":
        return Int32Array.from(bytes);
      case "I64":
      case "U64": {
        const src = t.dtype === "I64" ? new BigInt64Array(bytes.buffer, 0, bytes.byteLength / 8) : new BigUint64Array(bytes.buffer, 0, bytes.byteLength / 8);
        const out = new Int32Array(src.length);
        for (let i = 0; i < src.length; i++) {
          const v = src[i];
          if (v > 2147483647n || v < -2147483648n) throw new SafetensorsError(this.path, `element ${i} = ${v} does not fit in int32`, name);
          out[i] = Number(v);
        }
        return out;
      }
      default:
        throw new SafetensorsError(this.path, `dtype ${t.dtype} is not an integer type; use readF32 or readBytes`, name);
    }
  }

  /** Reads a tensor as the JS type matching its dtype family. */
  async read(name: string): Promise<{ dtype: Dtype; shape: readonly number[]; data: Float32Array | Int32Array }> {
    const t = this.info(name);
    const float = t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64";
    return { dtype: t.dtype, shape: t.shape, data: float ? await this.readF32(name) : await this.readI32(name) };
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

export function openSafetensors(file: string): Promise<SafetensorsReader> {
  return SafetensorsReader.open(file);
}

async function readExactly(handle: FileHandle, into: Uint8Array, position: number, file: string, tensor?: string): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const len = Math.min(READ_CHUNK, into.byteLength - done);
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(into, done, len, position + done));
    } catch (e) {
      throw withPath(e, file);
    }
    if (bytesRead === 0) throw new SafetensorsError(file, `unexpected end of file at byte ${position + done}`, tensor);
    done += bytesRead;
  }
}

// ---- writer ----

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(READ_CHUNK, bytes.byteLength - done));
    done += bytesWritten;
  }
}

export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array | Int32Array | Uint8Array;
  /** Defaults: F32 for Float32Array, I32 for Int32Array; Float32Array may also be stored as F16/BF16 (rounded); Uint8Array is raw bytes of any dtype. */
  dtype?: Dtype;
}

function resolveDtype(file: string, name: string, t: TensorToWrite): Dtype {
  if (t.data instanceof Float32Array) {
    const d = t.dtype ?? "F32";
    if (d !== "F32" && d !== "F16" && d !== "BF16") throw misuse(file, `Float32Array cannot be written as ${d}`, name);
    return d;
  }
  if (t.data instanceof Int32Array) {
    const d = t.dtype ?? "I32";
    if (d !== "I32") throw misuse(file, `Int32Array cannot be written as ${d}`, name);
    return d;
  }
  if (t.dtype === undefined || !isDtype(t.dtype)) throw misuse(file, "raw Uint8Array data needs an explicit dtype", name);
  return t.dtype;
}

/** Encodes at most this many elements at a time when converting, to keep memory flat. */
const ENCODE_CHUNK = 1 << 20;

function* tensorChunks(t: TensorToWrite, dtype: Dtype): Generator<Uint8Array> {
  const d = t.data;
  if (!(d instanceof Float32Array) || dtype === "F32") {
    yield new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    return;
  }
  const enc = dtype === "F16" ? f32ToF16 : f32ToBf16;
  for (let s = 0; s < d.length; s += ENCODE_CHUNK) {
    const n = Math.min(ENCODE_CHUNK, d.length - s);
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) out[i] = enc(d[s + i]);
    yield new Uint8Array(out.buffer);
  }
}

/**
 * Builds the exact header bytes (length prefix included) for tensors laid out in the given order.
 * Exported so tests can check the layout without writing data.
 */
export function encodeHeader(
  entries: readonly { name: string; dtype: Dtype; shape: readonly number[]; byteLength: number }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [off, off + e.byteLength] };
    off += e.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), "utf8");
  // Pad with spaces so the data starts 8-aligned, which keeps every tensor aligned for typed-array views.
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

/**
 * Writes tensors + metadata atomically, streaming tensor by tensor. Tensors are laid out by
 * element size (largest first) then name, like the reference writer, so every tensor's offset is
 * a multiple of its element size.
 */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite> | ReadonlyMap<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const list: [string, TensorToWrite][] =
    tensors instanceof Map ? [...(tensors as ReadonlyMap<string, TensorToWrite>).entries()] : Object.entries(tensors as Record<string, TensorToWrite>);
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== "string") throw misuse(file, `metadata["${k}"] must be a string`);
  }
  const entries = list.map(([name, t]) => {
    if (name === "__metadata__" || name === "") throw misuse(file, "reserved or empty tensor name", name);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw misuse(file, `bad shape [${t.shape.join(", ")}]`, name);
    const dtype = resolveDtype(file, name, t);
    const numel = numelOf(t.shape);
    const byteLength = numel * DTYPE_BYTES[dtype];
    const have = t.data instanceof Uint8Array ? t.data.byteLength / DTYPE_BYTES[dtype] : t.data.length;
    if (have !== numel) throw misuse(file, `shape [${t.shape.join(", ")}] has ${numel} elements but data has ${have}`, name);
    return { name, dtype, shape: t.shape, byteLength, t };
  });
  entries.sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header = encodeHeader(entries, metadata);
  try {
    await writeFileAtomicStream(file, async (h) => {
      await writeAll(h, header);
      for (const e of entries) for (const chunk of tensorChunks(e.t, e.dtype)) await writeAll(h, chunk);
    });
  } catch (e) {
    // a full disk shows up in a handle's write or sync, whose errors do not name the file
    throw withPath(e, file);
  }
}
