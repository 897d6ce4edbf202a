import { OP_TRAITS, type Op, opsOfKind } from "./ir.ts";

/** How the scheduler treats each op (from OP_TRAITS): computed per element, pure index math, or a constant leaf. */
export const ELEMENTWISE: ReadonlySet<Op> = new Set<Op>(opsOfKind("unary", "binary", "ternary", "cast", "random", "identity"));
export const MOVEMENT: ReadonlySet<Op> = new Set<Op>(opsOfKind("movement"));
export const LEAF_CONST: ReadonlySet<Op> = new Set<Op>(opsOfKind("constant"));

/** Ops that cost no arithmetic when inlined (movement is index math; a cast or barrier passes the value on). */
export const isFree = (op: Op): boolean => OP_TRAITS[op].free;
