import { constants as bufferConstants } from "node:buffer";
import * as fsp from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import type { ParamSource } from "./param-source.ts";
import { withPath } from "../errno.ts";
import { bf16ToF32, f16ToF32 } from "../../util/half-float.ts";
import { type CheckpointTensor, openCatalog } from "./catalog.ts";
import { WeightsError } from "./errors.ts";
import { applyTransform, shapeProblem } from "./transforms.ts";

/** One parameter's value as float32, in the parameter's layout. */
export interface StreamedParam {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** A parameter whose value a checkpoint provides. */
export interface SourcedParam {
  readonly name: string;
  readonly shape: readonly number[];
  readonly source: ParamSource;
}

/** The stored elements of `t` as float32 (F16 and BF16 widen exactly, F64 rounds). */
function decode(t: CheckpointTensor, bytes: Uint8Array): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  switch (t.dtype) {
    case "F32":
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case "F16": {
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(h[i]);
      return out;
    }
    case "BF16": {
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(h[i]);
      return out;
    }
    case "F64":
      return Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, n));
    default:
      throw new WeightsError(t.file, `stored as ${t.dtype}; dehvf reads F32, F16, BF16 and F64`, t.name);
  }
}

/** Open files of one streaming pass, closed at its end. */
class Handles {
  private readonly open = new Map<string, Promise<FileHandle>>();
  get(file: string): Promise<FileHandle> {
    let h = this.open.get(file);
    if (!h) this.open.set(file, (h = fsp.open(file, "r").catch((e) => Promise.reject(withPath(e, file)))));
    return h;
  }
  async close(): Promise<void> {
    for (const h of this.open.values()) await (await h.catch(() => undefined))?.close();
    this.open.clear();
  }
}

async function readBytes(handles: Handles, t: CheckpointTensor): Promise<Uint8Array> {
  if (t.byteLength > bufferConstants.MAX_LENGTH)
    throw new WeightsError(t.file, `${t.byteLength} bytes is more than one buffer can hold (${bufferConstants.MAX_LENGTH})`, t.name);
  const h = await handles.get(t.file);
  const out = new Uint8Array(t.byteLength);
  for (let done = 0; done < out.byteLength; ) {
    let n: number;
    try {
      ({ bytesRead: n } = await h.read(out, done, Math.min(1 << 28, out.byteLength - done), t.offset + done));
    } catch (e) {
      throw withPath(e, t.file);
    }
    if (n === 0) throw new WeightsError(t.file, `ends at byte ${t.offset + done}, inside this tensor (changed since it was checked?)`, t.name);
    done += n;
  }
  return out;
}

/** One parameter's value from its checkpoint: read by offset, checked (shape, every element finite), transformed. */
async function readSourced(handles: Handles, p: SourcedParam): Promise<Float32Array> {
  const { source } = p;
  const t = openCatalog(source.file).tensors.get(source.tensor);
  if (!t) throw new WeightsError(source.file, `no longer holds this tensor (for \`${p.name}\`)`, source.tensor);
  const problem = shapeProblem(source.transform, t.shape, p.shape);
  if (problem) throw new WeightsError(t.file, `${problem} (\`${p.name}\`)`, t.name);
  const data = decode(t, await readBytes(handles, t));
  for (let i = 0; i < data.length; i++)
    if (!Number.isFinite(data[i]))
      throw new WeightsError(t.file, `element ${i} is ${data[i]}${t.dtype === "F64" ? " as float32" : ""}: checkpoint weights must be finite`, t.name);
  return applyTransform(source.transform, data, t.shape);
}

/**
 * The parameters' values from their checkpoints, one tensor at a time as float32: what the
 * GPU path streams into device buffers, so frozen weights never exist as float64 on the host.
 */
export async function* streamSourced(params: readonly SourcedParam[]): AsyncGenerator<StreamedParam> {
  const handles = new Handles();
  try {
    for (const p of params) yield { name: p.name, shape: p.shape, data: await readSourced(handles, p) };
  } finally {
    await handles.close();
  }
}

/** The parameters with a checkpoint source, narrowed. */
export function sourcedParams<P extends { readonly source?: ParamSource }>(params: readonly P[]): (P & { readonly source: ParamSource })[] {
  return params.filter((p): p is P & { readonly source: ParamSource } => p.source !== undefined);
}

/** The parameters a trained result stores: all but the frozen ones a checkpoint provides (they stay in it). */
export function storedParams<P extends { readonly source?: ParamSource; readonly trainable: boolean }>(params: readonly P[]): P[] {
  return params.filter((p) => !p.source || p.trainable);
}
