import { UserFacingError } from "../util/user-facing-error.ts";
import { bf16ToF32, f16ToF32 } from "../util/half-float.ts";

/*
 * The safetensors format without a file system: the header's dtypes, its parser and a
 * decoder of a whole file's bytes (what a browser fetches), shared by io/safetensors.ts's
 * reader by offset and the runtime core.
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
export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Absolute position in the file. */
  readonly fileOffset: number;
  readonly byteLength: number;
}

export const located = (file: string, message: string, tensor?: string) => `${file}${tensor === undefined ? "" : ` (tensor "${tensor}")`}: ${message}`;

/** The file is not valid safetensors, or does not hold what was asked of it: the user's file to fix. */
export class SafetensorsError extends UserFacingError {
  constructor(file: string, message: string, tensor?: string) {
    super(located(file, message, tensor));
    this.name = "SafetensorsError";
  }
}

export function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

export function numelOf(shape: readonly number[]): number {
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
  const dataStart = 8 + new TextEncoder().encode(headerText).length;
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

/** A tensor of a decoded file: floats widened to f32, integers as i32. */
export interface DecodedTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
}

/**
 * Every tensor of a safetensors file held in memory (`file` names it in errors). F32, F16
 * and BF16 become f32; I32 and smaller integers i32; anything else is refused.
 */
export function decodeSafetensors(bytes: Uint8Array, file = "weights"): Map<string, DecodedTensor> {
  if (bytes.length < 8) throw new SafetensorsError(file, `${bytes.length} bytes: too short for a safetensors header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES || 8 + n > bytes.length) throw new SafetensorsError(file, `header length ${n} does not fit the ${bytes.length}-byte file`);
  const { tensors } = parseHeader(file, new TextDecoder().decode(bytes.subarray(8, 8 + n)), bytes.length - 8 - n);
  const out = new Map<string, DecodedTensor>();
  for (const t of tensors) {
    const count = numelOf(t.shape);
    const at = (i: number, size: number) => t.fileOffset + i * size;
    let data: Float32Array | Int32Array;
    if (t.dtype === "F32") data = Float32Array.from({ length: count }, (_, i) => view.getFloat32(at(i, 4), true));
    else if (t.dtype === "F16") data = Float32Array.from({ length: count }, (_, i) => f16ToF32(view.getUint16(at(i, 2), true)));
    else if (t.dtype === "BF16") data = Float32Array.from({ length: count }, (_, i) => bf16ToF32(view.getUint16(at(i, 2), true)));
    else if (t.dtype === "I32") data = Int32Array.from({ length: count }, (_, i) => view.getInt32(at(i, 4), true));
    else throw new SafetensorsError(file, `dtype ${t.dtype} is not one the runtime loads (F32, F16, BF16, I32)`, t.name);
    out.set(t.name, { shape: t.shape, data });
  }
  return out;
}
