import type { Tensor } from "../compiler/tensor.ts";
import { UserError } from "../grammar/diagnostics.ts";
import { f16ToF32, f32ToF16 } from "../util/half-float.ts";

/**
 * Weights stored as f16 on the device (Node 20 has no Float16Array). A value becomes the
 * f32 it would be stored as otherwise, then the nearest f16 (ties to even: io/safetensors.ts).
 */

/** f16's largest finite value, and from where on a value rounds to infinity */
const LARGEST = 65504;
const OVERFLOW = 65520;

/** `x` as the device holds it in an f16 buffer. */
export const roundToHalf = (x: number): number => f16ToF32(f32ToF16(x));

/** A tensor with every value rounded to f16: what a device holding it as f16 computes with. */
export function roundedToHalf(t: Tensor): Tensor {
  return { shape: t.shape, data: t.data.map(roundToHalf) };
}

/**
 * Weights as f16 bits, refusing a finite value past f16's range (it would become
 * infinite on the device); `what` names the tensor in that error.
 */
export function toHalf(data: ArrayLike<number>, what: string): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (Number.isFinite(v) && Math.abs(v) >= OVERFLOW)
      throw new UserError(`\`${what}\` holds ${v} at element ${i}, beyond f16's range (±${LARGEST}): load it with --weights f32`);
    out[i] = f32ToF16(v);
  }
  return out;
}

export function fromHalf(bits: Uint16Array): Float64Array {
  return Float64Array.from(bits, f16ToF32);
}
