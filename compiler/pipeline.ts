import type { GraphBuilder } from "./graph.ts";
import type { Node } from "./ir.ts";
import { foldConstants } from "./passes/fold-constants.ts";
import { simplify } from "./passes/simplify.ts";
import { transposeMatmul } from "./passes/transpose-matmul.ts";

export interface Root {
  readonly name: string;
  readonly node: Node;
}

/** A named graph rewrite; passes are pure: they return new roots, never mutate nodes. */
export interface Pass {
  readonly name: string;
  readonly description: string;
  run(roots: readonly Root[], graph: GraphBuilder): readonly Root[];
}

/**
 * The one ordered list of passes every compile goes through. The elaborated graph is
 * already CSE'd (hash-consing) and dead-code free (it is rooted at the outputs);
 * rewrites, fusion grouping and scheduling are appended here as they land.
 */
export const PIPELINE: readonly Pass[] = [foldConstants, simplify, transposeMatmul];

/** Stage names `--dump-after` accepts: the elaborated graph, then each pass. */
export const STAGES = ["elaborate", ...PIPELINE.map((p) => p.name)];

export function runPipeline(roots: readonly Root[], graph: GraphBuilder, onStage?: (stage: string, roots: readonly Root[]) => void): readonly Root[] {
  onStage?.("elaborate", roots);
  let cur = roots;
  for (const p of PIPELINE) {
    cur = p.run(cur, graph);
    onStage?.(p.name, cur);
  }
  return cur;
}
