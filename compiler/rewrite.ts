import { shapeEq, shapeStr } from "./dims.ts";
import { type GraphBuilder, topoOrder } from "./graph.ts";
import type { Node, Op } from "./ir.ts";
import type { Pass } from "./pipeline.ts";

/**
 * One named local rewrite. `ops` says which ops it looks at (dispatch, so a rule is
 * only asked about nodes it can match); `rewrite` returns the replacement, or
 * undefined when the rule does not apply. A replacement must compute the same values
 * with the same shape and dtype; returning `n` itself counts as "does not apply".
 */
export interface Rule<O extends Op = Op> {
  readonly name: string;
  readonly ops: readonly O[];
  // method syntax on purpose: a Rule<"add"> is then usable where a Rule is expected
  // (dispatch by `ops` guarantees it only ever sees its own ops)
  rewrite(n: Node<O>, g: GraphBuilder): Node | undefined;
}

/** Rule constructor: `rewrite` sees nodes narrowed to `ops`. */
export function rule<O extends Op>(name: string, ops: readonly O[], rewrite: (n: Node<O>, g: GraphBuilder) => Node | undefined): Rule<O> {
  return { name, ops, rewrite };
}

/** A rewrite broke an invariant (shape/dtype changed, no fixpoint): a bug in a rule. */
export class RewriteError extends Error {}

export interface RewriteOptions {
  /** called once per firing, after the invariant checks */
  readonly onFire?: (rule: string, before: Node, after: Node) => void;
  /** firings allowed at one node before it is declared a loop (default 100) */
  readonly maxStepsPerNode?: number;
}

/**
 * Rewrites the graph under `roots` bottom-up to a fixpoint of `rules` and returns the
 * new roots (same order). Nodes are never mutated: a node whose sources changed is
 * rebuilt with `g.make` (so it hash-conses with any identical node), then the rules
 * are tried on it until none fires. Nodes a rule creates are normalised the same way
 * before the rules see their users, so one run reaches a fixpoint: running the same
 * rules again returns the identical root nodes. New nodes inherit the provenance (DSL
 * span) of the node they replace.
 */
export function rewriteGraph(roots: readonly Node[], g: GraphBuilder, rules: readonly Rule[], opts: RewriteOptions = {}): Node[] {
  const byOp = new Map<Op, Rule[]>();
  for (const r of rules) for (const op of r.ops) byOp.set(op, [...(byOp.get(op) ?? []), r]);
  const maxSteps = opts.maxStepsPerNode ?? 100;
  /** node id → its normal form; normal forms map to themselves */
  const memo = new Map<number, Node>();

  const rebuild = (n: Node): Node => {
    const src = n.src.map(normalise);
    if (src.every((s, i) => s === n.src[i])) return n;
    const m = g.make(n.op, src, n.attrs);
    check(n, m, "rebuild");
    return m;
  };

  // Recursion only descends into nodes a rule just created (their sources are mostly
  // already normal), so its depth is small; the traversal of the input graph itself
  // is iterative (topoOrder), which matters for deep graphs.
  function normalise(n: Node): Node {
    const done = memo.get(n.id);
    if (done) return done;
    // nodes built while rewriting n inherit n's DSL location (g stamps currentSpan)
    const outer = g.currentSpan;
    const outerPath = g.currentPath;
    g.currentSpan = g.provenance.get(n.id) ?? outer;
    g.currentPath = g.instancePath.get(n.id) ?? outerPath;
    try {
      return normaliseAt(n);
    } finally {
      g.currentSpan = outer;
      g.currentPath = outerPath;
    }
  }

  function normaliseAt(n: Node): Node {
    let cur = rebuild(n);
    for (let step = 0; ; step++) {
      const hit = memo.get(cur.id);
      if (hit) {
        cur = hit;
        break;
      }
      const fired = fire(cur);
      if (!fired) break;
      if (step >= maxSteps) throw new RewriteError(`rewrite of ${n.op} node ${n.id} did not reach a fixpoint in ${maxSteps} steps (last rule: ${fired.rule})`);
      check(cur, fired.to, fired.rule);
      opts.onFire?.(fired.rule, cur, fired.to);
      cur = rebuild(fired.to);
    }
    memo.set(n.id, cur);
    memo.set(cur.id, cur);
    return cur;
  }

  function fire(n: Node): { rule: string; to: Node } | undefined {
    for (const r of byOp.get(n.op) ?? []) {
      const to = r.rewrite(n, g);
      if (to && to !== n) return { rule: r.name, to };
    }
    return undefined;
  }

  for (const n of topoOrder(roots)) normalise(n);
  return roots.map((r) => memo.get(r.id)!);
}

function check(before: Node, after: Node, what: string): void {
  if (after.dtype !== before.dtype || !shapeEq(after.shape, before.shape))
    throw new RewriteError(
      `${what}: ${before.op} node ${before.id} ${shapeStr(before.shape)} ${before.dtype} was replaced by ${after.op} node ${after.id} ${shapeStr(after.shape)} ${after.dtype}`,
    );
}

/** A pipeline pass that rewrites the graph to a fixpoint of `rules`. */
export function rulePass(name: string, description: string, rules: readonly Rule[]): Pass {
  return {
    name,
    description,
    run(roots, g) {
      const out = rewriteGraph(
        roots.map((r) => r.node),
        g,
        rules,
      );
      return roots.map((r, i) => ({ name: r.name, node: out[i] }));
    },
  };
}
