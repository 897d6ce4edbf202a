/**
 * The `hash` op's function, in exact 32-bit unsigned arithmetic: the float64 interpreter
 * computes it here with Math.imul and `>>> 0`, the generated WGSL (kernels/render.ts,
 * WGSL_HELPERS.hash_) with u32 operations, so both give the same bits and the same
 * uniform number for every element. Dropout's masks are therefore identical on the
 * device and in the reference interpreter.
 *
 *   hash(key, counter; salt) = (pcg(counter + pcg(key + pcg(salt))) >> 8) · 2^-24
 *
 * pcg is PCG-RXS-M-XS-32 as a hash (Jarzynski & Olano, "Hash Functions for GPU Rendering",
 * JCGT 2020: the best quality for its cost among the 32-bit hashes they test); nesting
 * `pcg(x + pcg(y))` is their construction for several inputs. It is a bijection of u32, so
 * for one key the counters 0, 1, 2, ... never collide before the top 24 bits are kept.
 * The result is a multiple of 2^-24 in [0, 1): exact in f32 and in float64.
 */

/** PCG-RXS-M-XS-32 of a u32 (a number in [0, 2^32)), as a u32. */
export function pcgHash(v: number): number {
  const state = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** What a salt contributes, computed once per node (the WGSL gets it as a literal). */
export const saltMix = (salt: number): number => pcgHash(salt >>> 0);

/**
 * The hash of one element: `key` and `counter` are i32 values (any whole number: their
 * two's-complement bits are used, as WGSL's bitcast<u32> does), `mix` is saltMix(salt).
 */
export function hashUniform(key: number, counter: number, mix: number): number {
  const k = pcgHash(((key >>> 0) + mix) >>> 0);
  return (pcgHash(((counter >>> 0) + k) >>> 0) >>> 8) * 2 ** -24;
}

/** A 32-bit FNV-1a of a string: the salt of a dropout call site from its instance path. */
export function stringSalt(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
