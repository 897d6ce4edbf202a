import type { InitRule } from "./ir.ts";

/** The `init` rules the DSL accepts and their parameters, in positional order. */
export const INIT_RULES: Record<InitRule["kind"], readonly string[]> = {
  zeros: [],
  ones: [],
  const: ["value"],
  normal: ["std", "mean"],
  uniform: ["bound"],
  xavier: [],
};

export function makeInitRule(kind: InitRule["kind"], args: Record<string, number>): InitRule {
  switch (kind) {
    case "zeros":
    case "ones":
    case "xavier":
      return { kind };
    case "const":
      return { kind, value: args.value ?? 0 };
    case "normal":
      return { kind, std: args.std ?? 0.02, mean: args.mean ?? 0 };
    case "uniform":
      return { kind, bound: args.bound ?? 0.1 };
  }
}

export function initText(r: InitRule): string {
  switch (r.kind) {
    case "const":
      return `const(${r.value})`;
    case "normal":
      return r.mean === 0 ? `normal(${r.std})` : `normal(${r.std}, ${r.mean})`;
    case "uniform":
      return `uniform(${r.bound})`;
    default:
      return r.kind;
  }
}
