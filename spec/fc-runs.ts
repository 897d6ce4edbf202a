import type fc from "fast-check";

/**
 * Property tests run with a fixed seed so CI is repeatable; FC_SEED=<n> picks another
 * and FC_SEED=random explores (print the failing seed, then fix what it finds).
 */
const FC_SEED = process.env.FC_SEED === "random" ? undefined : Number.parseInt(process.env.FC_SEED ?? "20251124", 10) || 20251124;

export function fcRuns(numRuns: number): fc.Parameters<unknown> {
  return { numRuns, ...(FC_SEED === undefined ? {} : { seed: FC_SEED }) };
}
