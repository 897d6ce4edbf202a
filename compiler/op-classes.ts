import type { Op } from "./ir.ts";

/** How the scheduler treats each op: computed per element, pure index math, or a constant leaf. */
export const ELEMENTWISE: ReadonlySet<Op> = new Set<Op>(["neg", "recip", "exp", "log", "sqrt", "sin", "cos", "tanh", "erf", "cast", "add", "mul", "max", "cmplt", "cmpeq", "where", "hash", "barrier"]);
export const MOVEMENT: ReadonlySet<Op> = new Set<Op>(["reshape", "permute", "expand", "slice", "pad", "concat"]);
export const LEAF_CONST: ReadonlySet<Op> = new Set<Op>(["const", "size", "arange"]);
