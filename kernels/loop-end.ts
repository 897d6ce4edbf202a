/** What counted loops depend on. */
export interface LoopTarget {
  /**
   * Keep counted loops rolled: hide their trip counts from the driver's unroller (see
   * `loopEnd`). For CPU adapters, where unrolled copies cost compile time and no run time.
   */
  readonly rolledLoops?: boolean;
}

/**
 * The end of a counted loop `i < end` as WGSL, for a loop whose trip count is the constant
 * `n` (`anchor`: a runtime-sized storage array the kernel binds, its output).
 *
 * lavapipe unrolls every loop of up to about 40 trips completely and then has LLVM
 * compile each copy: one vec4 load summed over 32 trips costs 0.5 s to compile and 0.03 s
 * rolled; the tiny-vqa training step's 157 shaders 53 s against 13 s with all loops
 * rolled, while the step runs no faster unrolled (sum of kernel medians 177 vs 179 ms).
 * Rolled, the bound reads `n | (arrayLength(&anchor) & 0x80000000u)`: n itself, as no
 * binding of a rolled-loops target reaches 2^31 elements (its bindings are below 4 GiB,
 * see `rolledLoopsFor`), yet a value no range analysis can bound, so the loop stays a
 * loop. (`n + (arrayLength(&anchor) >> 31u)` is not enough: its range is known, and
 * lavapipe still unrolls.)
 */
export function loopEnd(n: number, t: LoopTarget, anchor: string): string {
  return t.rolledLoops ? `(${n}u | (arrayLength(&${anchor}) & 0x80000000u))` : `${n}u`;
}

/** Whether an adapter gets rolled loops: CPU adapters whose bindings stay below 4 GiB (so below 2^31 elements of 2 bytes or more). */
export function rolledLoopsFor(isCpu: boolean, maxBindingBytes: number): boolean {
  return isCpu && maxBindingBytes < 2 ** 32;
}
