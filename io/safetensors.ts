import { constants as bufferConstants } from "node:buffer";
import * as fsp from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import { writeFileAtomicStream } from "./atomic.ts";
import { withPath } from "./errno.ts";
import { f16ToF32, f32ToBf16, f32ToF16 } from "../util/half-float.ts";
import { DTYPE_BYTES, type Dtype, isDtype, located, MAX_HEADER_BYTES, numelOf, parseHeader, SafetensorsError, type TensorInfo } from "./safetensors-format.ts";

export { DTYPE_BYTES, type Dtype, MAX_HEADER_BYTES, parseHeader, SafetensorsError, type TensorInfo } from "./safetensors-format.ts";

/*
 * safetensors (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of
 * JSON header, then the data buffer. Tensors are read by offset on demand because real
 * checkpoints are GBs and a PEFT run only needs some of them at a time.
 */

/** Reads and writes are split so no single fs call exceeds what Node accepts (2 GiB - 1). */
const READ_CHUNK = 1 << 28;

/** The writer was called with data it cannot store: a bug in the caller, not in any file. */
const misuse = (file: string, message: string, tensor?: string) => new Error(located(file, message, tensor));

if (endianness() !== "LE") throw new Error("io/safetensors.ts assumes a little-endian host");

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
