import type { Node } from "../ir.ts";
import type { Root } from "../pipeline.ts";
import { executionOrder } from "../recompute.ts";
import type { RowGroup } from "../row-group.ts";
import type { ChainedMatmul, Kernel, ScheduleLimits } from "../schedule.ts";
import { shapeEval } from "../dims.ts";

/**
 * What the scheduler's passes read and decide, in one place: the graph in execution order
 * with its concrete shapes and users (fixed), and the decisions each pass adds — which
 * nodes get a buffer, which matmuls chain, which epilogues have several exits, which
 * values form row groups or fold a batch sum, then the kernels.
 */
export interface ScheduleState {
  readonly roots: readonly Root[];
  readonly dims: Readonly<Record<string, number>>;
  readonly limits: ScheduleLimits;
  /** nodes that must get a buffer (grown when a kernel would exceed the binding limit) */
  readonly forced: ReadonlySet<Node>;
  readonly order: readonly Node[];
  readonly position: ReadonlyMap<Node, number>;
  readonly shapes: ReadonlyMap<Node, readonly number[]>;
  readonly users: ReadonlyMap<Node, readonly Node[]>;
  readonly rootSet: ReadonlySet<Node>;
  /** nodes with a buffer of their own ("materialized") */
  readonly mat: Set<Node>;
  /** a matmul → the chain it ends (attention, FFN memory), computed as one kernel */
  readonly chains: Map<Node, ChainedMatmul>;
  /** epilogue exits that took a matmul's buffer */
  readonly absorbedInto: Set<Node>;
  /** a multi-exit epilogue's first exit → the others, which the same matmul kernel writes */
  readonly extraExits: Map<Node, Node[]>;
  readonly secondaryExits: Set<Node>;
  /** a row kernel's output → its group */
  readonly rowGroups: Map<Node, RowGroup>;
  /** a sum over a batched matmul's batch axis computed as one matmul → that axis */
  readonly sumFolds: Map<Node, number>;
  kernels: Kernel[];
  /** operands to give a buffer and schedule again, when a kernel would bind too many */
  readonly tooWide: Set<Node>;
  /** 2-D parameters stored transposed on the device */
  transposedParams: Set<Node>;
}

export function concreteShapes(order: readonly Node[], dims: Readonly<Record<string, number>>): Map<Node, number[]> {
  return new Map(order.map((n) => [n, shapeEval(n.shape, dims)]));
}

export function initialState(roots: readonly Root[], dims: Readonly<Record<string, number>>, limits: ScheduleLimits, forced: ReadonlySet<Node>): ScheduleState {
  const order = executionOrder(roots.map((r) => r.node));
  const users = new Map<Node, Node[]>();
  for (const n of order)
    for (const s of n.src) {
      const us = users.get(s);
      if (us) us.push(n);
      else users.set(s, [n]);
    }
  return {
    roots,
    dims,
    limits,
    forced,
    order,
    position: new Map(order.map((n, i) => [n, i])),
    shapes: concreteShapes(order, dims),
    users,
    rootSet: new Set(roots.map((r) => r.node)),
    mat: new Set(forced),
    chains: new Map(),
    absorbedInto: new Set(),
    extraExits: new Map(),
    secondaryExits: new Set(),
    rowGroups: new Map(),
    sumFolds: new Map(),
    kernels: [],
    tooWide: new Set(),
    transposedParams: new Set(),
  };
}
