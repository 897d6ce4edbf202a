import type { Shape } from "../compiler/dims.ts";
import type { CompiledModel, InputInfo } from "../compiler/elaborate.ts";
import { GraphBuilder } from "../compiler/graph.ts";
import type { DType, Node } from "../compiler/ir.ts";
import { TensorOps } from "../compiler/tensor-ops.ts";

/**
 * A hand-built graph packaged as the part of a CompiledModel that `buildPlan` reads
 * (`name`, `graph`, `inputs`, `outputs`), for tests that lower IR directly without a
 * DSL program. The remaining fields (program, root instance, params, fusions,
 * symbols) are never touched by planning or execution, hence the cast.
 */
export type GraphModel = Pick<CompiledModel, "name" | "graph" | "inputs" | "outputs">;

export function graphModel(name: string, graph: GraphBuilder, inputs: readonly InputInfo[], outputs: readonly { name: string; node: Node }[]): CompiledModel {
  const m: GraphModel = { name, graph, inputs, outputs };
  return m as CompiledModel;
}

/** A GraphBuilder with its TensorOps and the input/param nodes made so far. */
export class GraphKit {
  readonly g = new GraphBuilder();
  readonly t = new TensorOps(this.g);
  readonly inputs: InputInfo[] = [];

  input(name: string, shape: Shape, dtype: DType = "f32"): Node {
    const node = this.g.make("input", [], { name, shape, dtype });
    if (!this.inputs.some((i) => i.node === node)) this.inputs.push({ name, shape, dtype, node });
    return node;
  }

  param(name: string, shape: Shape): Node {
    return this.g.make("param", [], { name, shape, init: { kind: "zeros" }, trainable: true });
  }

  model(name: string, outputs: readonly Node[]): CompiledModel {
    return graphModel(
      name,
      this.g,
      this.inputs,
      outputs.map((node, i) => ({ name: `out${i}`, node })),
    );
  }
}
