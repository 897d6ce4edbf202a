import { MAX_HEADER_BYTES, parseHeader, type TensorInfo } from "../safetensors.ts";
import { WeightsError } from "./errors.ts";
import { readAt, withFile } from "./sync-read.ts";

/**
 * The tensor table and metadata of a safetensors file, read synchronously (the header
 * only: a few KB of a multi-GB file), validated by io/safetensors.ts's parseHeader.
 */
export function readSafetensorsHeader(file: string): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  return withFile(file, (fd, size) => {
    if (size < 8) throw new WeightsError(file, `file is ${size} bytes, shorter than the 8-byte header length of a safetensors file`);
    const n = readAt(fd, file, 0, 8).readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES) || 8 + Number(n) > size)
      throw new WeightsError(file, `header length ${n} does not fit (file of ${size} bytes, at most ${MAX_HEADER_BYTES}): not a safetensors file?`);
    const header = readAt(fd, file, 8, Number(n));
    if (header[0] !== 0x7b) throw new WeightsError(file, "header does not start with '{': not a safetensors file?");
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(header);
    } catch {
      throw new WeightsError(file, "header is not valid UTF-8");
    }
    return parseHeader(file, text, size - 8 - Number(n));
  });
}
