import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { gradients, gradRules } from "../compiler/autodiff.ts";
import { dropout } from "../compiler/dropout.ts";
import type { Shape } from "../compiler/dims.ts";
import { topoOrder } from "../compiler/graph.ts";
import { interpret } from "../compiler/interpret.ts";
import { type Node, type Op, OPS } from "../compiler/ir.ts";
import { rng } from "../util/rng.ts";
import { numel, type Tensor, tensor } from "../compiler/tensor.ts";
import { fcRuns } from "./fc-runs.ts";
import { GraphKit } from "./graph-model.ts";

// ---------------------------------------------------------------------------
// Finite differences in the float64 interpreter: central differences, h = 1e-6, so the
// truncation error (~h²) and rounding (~1e-16/h) both stay near 1e-10.

interface Case {
  readonly kit: GraphKit;
  readonly loss: Node;
  readonly params: readonly Node[];
  readonly values: Map<string, Tensor>;
  readonly inputs: Map<string, Tensor>;
}

function sumAll(kit: GraphKit, x: Node): Node {
  let s = x;
  while (s.shape.length) s = kit.t.sum(s, 0);
  return s;
}

/** loss = Σ w ⊙ out with fixed random weights w, so every output element's gradient matters. */
function weightedLoss(kit: GraphKit, out: Node, inputs: Map<string, Tensor>, seed: number): Node {
  const shape = out.shape as number[];
  const w = kit.input(`w${out.id}`, shape);
  const r = rng(seed);
  inputs.set(
    `w${out.id}`,
    tensor(
      shape,
      Array.from({ length: numel(shape) }, () => r() * 2 - 1),
    ),
  );
  return sumAll(kit, kit.t.mul(w, kit.t.float(out)));
}

function paramValues(params: readonly Node[], seed: number, lo = -1.5, hi = 1.5): Map<string, Tensor> {
  const r = rng(seed);
  return new Map(
    params.map((p) => {
      const shape = p.shape as number[];
      return [
        (p.attrs as { name: string }).name,
        tensor(
          shape,
          Array.from({ length: numel(shape) }, () => lo + (hi - lo) * r()),
        ),
      ];
    }),
  );
}

function checkGradients(c: Case, what: string): void {
  const grads = gradients(c.kit.g, c.loss, c.params);
  const env = (values: Map<string, Tensor>) => ({ dims: {}, inputs: c.inputs, params: values });
  const analytic = interpret(grads, env(c.values));
  const h = 1e-6;
  c.params.forEach((p, k) => {
    const name = (p.attrs as { name: string }).name;
    const base = c.values.get(name)!;
    for (let i = 0; i < base.data.length; i++) {
      const at = (delta: number) => {
        const data = Float64Array.from(base.data);
        data[i] += delta;
        const vals = new Map(c.values).set(name, { shape: base.shape, data });
        return interpret([c.loss], env(vals))[0].data[0];
      };
      const fd = (at(h) - at(-h)) / (2 * h);
      const got = analytic[k].data[i];
      const tol = 1e-6 + 1e-5 * Math.max(Math.abs(fd), Math.abs(got));
      if (!(Math.abs(got - fd) <= tol)) assert.fail(`${what}: d loss / d ${name}[${i}] = ${got}, finite differences give ${fd}`);
    }
  });
}

/** One op applied to fresh parameters (plus optional fixed inputs), checked against finite differences. */
function opCase(
  build: (kit: GraphKit, p: (shape: Shape) => Node, inputs: Map<string, Tensor>) => Node,
  opts: { lo?: number; hi?: number; seed?: number } = {},
): Case {
  const kit = new GraphKit();
  const params: Node[] = [];
  const inputs = new Map<string, Tensor>();
  const p = (shape: Shape) => {
    const n = kit.param(`p${params.length}`, shape);
    params.push(n);
    return n;
  };
  const out = build(kit, p, inputs);
  const loss = weightedLoss(kit, out, inputs, opts.seed ?? 7);
  return { kit, loss, params, values: paramValues(params, (opts.seed ?? 7) + 1, opts.lo, opts.hi), inputs };
}

function intInput(kit: GraphKit, inputs: Map<string, Tensor>, name: string, shape: number[], values: number[]): Node {
  inputs.set(name, tensor(shape, values));
  return kit.input(name, shape, "i32");
}

// ---------------------------------------------------------------------------
// Every op's rule on its own

const OP_CASES: Record<string, { ops: readonly Op[]; make: () => Case }> = {
  "neg exp sin cos tanh erf": {
    ops: ["neg", "exp", "sin", "cos", "tanh", "erf"],
    make: () => opCase((k, p) => (["neg", "exp", "sin", "cos", "tanh", "erf"] as const).map((op) => k.t.unary(op, p([2, 3]))).reduce((a, b) => k.t.add(a, b))),
  },
  "recip log sqrt (positive inputs)": {
    ops: ["recip", "log", "sqrt"],
    make: () =>
      opCase((k, p) => k.t.add(k.t.add(k.t.unary("recip", p([2, 3])), k.t.unary("log", p([2, 3]))), k.t.unary("sqrt", p([2, 3]))), { lo: 0.5, hi: 2 }),
  },
  "add mul max": {
    ops: ["add", "mul", "max"],
    make: () =>
      opCase((k, p) => {
        const [a, b, c] = [p([2, 3]), p([2, 3]), p([2, 3])];
        return k.t.binary("max", k.t.mul(k.t.add(a, b), c), b);
      }),
  },
  "where cmplt cmpeq cast (no gradient through conditions or casts)": {
    ops: ["where", "cmplt", "cmpeq", "cast"],
    make: () =>
      opCase((k, p) => {
        const [a, b] = [p([2, 3]), p([2, 3])];
        const cond = k.t.add(k.t.binary("cmplt", a, b), k.t.binary("cmpeq", k.t.cast(k.t.cast(a, "i32"), "f32"), k.t.scalar(0)));
        return k.t.add(k.t.where(k.t.binary("cmplt", k.t.scalar(0.5), cond), a, k.t.mul(b, b)), k.t.cast(k.t.cast(b, "i32"), "f32"));
      }),
  },
  "sum rmax": {
    ops: ["sum", "rmax"],
    make: () =>
      opCase((k, p) => {
        const a = p([3, 4]);
        return k.t.add(k.t.expand(k.t.sum(a, 1, true), [3, 4]), k.t.expand(k.t.max(a, 0, true), [3, 4]));
      }),
  },
  "reshape permute expand": {
    ops: ["reshape", "permute", "expand"],
    make: () =>
      opCase((k, p) => k.t.mul(k.t.permute(k.t.reshape(p([2, 3, 4]), [4, 3, 2]), [2, 0, 1]), k.t.make("expand", [p([2, 1, 3])], { shape: [2, 4, 3] }))),
  },
  "slice pad concat": {
    ops: ["slice", "pad", "concat"],
    make: () =>
      opCase((k, p) => {
        const a = p([3, 5]);
        const s = k.t.slice(a, 1, 1, 4);
        return k.t.concat([k.t.pad(s, 0, 1, 2), p([6, 2]), k.t.slice(a, 0, 0, 1).shape.length ? k.t.pad(k.t.slice(a, 0, 0, 1), 0, 2, 3) : s], 1);
      }),
  },
  "matmul (batched, broadcast batch)": {
    ops: ["matmul"],
    make: () => opCase((k, p) => k.t.add(k.t.matmul(p([2, 3, 4]), p([2, 4, 5])), k.t.matmul(p([1, 3, 4]), p([2, 4, 5])))),
  },
  "gather (repeated indices, rank-2 and rank-1 index, scalar index)": {
    ops: ["gather"],
    make: () =>
      opCase((k, p, inputs) => {
        const table = p([5, 3]);
        const i2 = intInput(k, inputs, "i2", [2, 4], [0, 4, 4, 1, 2, 0, 0, 3]);
        const i1 = intInput(k, inputs, "i1", [3], [1, 1, 4]);
        const i0 = intInput(k, inputs, "i0", [], [2]);
        const a = k.t.sum(k.t.gather(table, i2), 0);
        return k.t.add(k.t.add(a, k.t.pad(k.t.gather(table, i1), 0, 0, 1)), k.t.expand(k.t.gather(table, i0), [4, 3]));
      }),
  },
  "write_slot (each row's slot from x, the rest from the cache; a row written twice by two writes)": {
    ops: ["write_slot"],
    make: () =>
      opCase((k, p, inputs) => {
        const pos = intInput(k, inputs, "pos", [3], [2, 0, 3]);
        const once = k.t.make("write_slot", [p([3, 2, 4, 2]), p([3, 2, 1, 2]), pos], { axis: 2 });
        return k.t.make("write_slot", [once, p([3, 2, 1, 2]), intInput(k, inputs, "pos2", [3], [2, 1, 1])], { axis: 2 });
      }),
  },
  "barrier (the identity a recomputed layer reads its saved input through)": {
    ops: ["barrier"],
    make: () =>
      opCase((k, p) => {
        const a = p([2, 3]);
        return k.t.mul(k.t.make("barrier", [k.t.unary("sin", a)], {}), a);
      }),
  },
  "hash (dropout with a fixed seed: the mask is fixed, no gradient into the int key or counters)": {
    ops: ["hash"],
    make: () => opCase((k, p, inputs) => dropout(k.t, p([4, 5]), 0.3, intInput(k, inputs, "seed", [], [12345]), 7)),
  },
  "arange size const input (sources)": {
    ops: ["arange", "size", "const", "input", "param"],
    make: () =>
      opCase((k, p, inputs) => {
        inputs.set("x", tensor([4], [0.5, -1, 2, 3]));
        return k.t.mul(k.t.mul(p([4]), k.t.add(k.t.arange(4), k.input("x", [4]))), k.t.add(k.t.size(4), k.t.scalar(0.25)));
      }),
  },
};

describe("autodiff: every op's gradient rule against finite differences", () => {
  for (const [name, c] of Object.entries(OP_CASES)) test(name, () => checkGradients(c.make(), name));

  test("every op in the IR is exercised by a case above", () => {
    const covered = new Set(Object.values(OP_CASES).flatMap((c) => c.ops));
    assert.deepEqual(
      OPS.filter((op) => !covered.has(op)),
      [],
    );
    assert.deepEqual(Object.keys(gradRules).sort(), [...OPS].sort());
  });
});

// ---------------------------------------------------------------------------
// Random composite graphs: a program of steps over a pool of [2, 3] tensors

type Step = readonly [kind: number, a: number, b: number];
const STEP_KINDS = 12;

function composite(kit: GraphKit, pool: Node[], [kind, ai, bi]: Step): Node {
  const { t } = kit;
  const a = pool[ai % pool.length];
  const b = pool[bi % pool.length];
  const soft = (x: Node) => t.add(t.mul(x, x), t.scalar(1)); // > 0, for log / sqrt / recip
  switch (kind % STEP_KINDS) {
    case 0:
      return t.add(a, b);
    case 1:
      return t.mul(a, b);
    case 2:
      return t.unary("tanh", t.add(a, b));
    case 3:
      return t.unary("log", soft(a));
    case 4:
      return t.div(a, soft(b));
    case 5:
      return t.binary("max", a, t.unary("sin", b));
    case 6:
      return t.where(t.binary("cmplt", a, b), t.unary("exp", t.mul(a, t.scalar(0.3))), t.unary("sqrt", soft(b)));
    case 7:
      return t.expand(t.sum(a, 1, true), [2, 3]);
    case 8:
      return t.expand(t.max(t.mul(a, b), 0, true), [2, 3]);
    case 9:
      return t.reshape(t.permute(t.reshape(a, [3, 2]), [1, 0]), [2, 3]);
    case 10:
      return t.concat([t.matmul(a, t.transposeLast(b)), t.slice(a, 1, 0, 1)], 1);
    default:
      return t.softmax(t.add(a, t.unary("erf", b)), -1);
  }
}

describe("autodiff: random composite graphs against finite differences", () => {
  test("property: reverse mode equals finite differences", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat()), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 3 }),
        fc.nat(),
        (steps, nParams, seed) => {
          const kit = new GraphKit();
          const params = Array.from({ length: nParams }, (_, i) => kit.param(`p${i}`, [2, 3]));
          const pool: Node[] = [...params];
          for (const s of steps) pool.push(composite(kit, pool, s));
          const inputs = new Map<string, Tensor>();
          const loss = weightedLoss(kit, pool[pool.length - 1], inputs, seed);
          checkGradients({ kit, loss, params, values: paramValues(params, seed + 1), inputs }, `steps ${JSON.stringify(steps)}`);
        },
      ),
      fcRuns(60),
    );
  });
});

describe("autodiff: what gets differentiated", () => {
  test("frozen branches are not differentiated: no gradient node reads only frozen values", () => {
    const kit = new GraphKit();
    const { t } = kit;
    const frozen = kit.g.make("param", [], { name: "frozen", shape: [4, 4], init: { kind: "zeros" }, trainable: false });
    const x = kit.input("x", [2, 4]);
    const deep = [0, 1, 2, 3].reduce((h) => t.unary("tanh", t.matmul(h, frozen)), x); // frozen-only branch
    const w = kit.param("w", [4, 4]);
    const loss = sumAll(kit, t.matmul(deep, w));
    const before = kit.g.size;
    const [gw] = gradients(kit.g, loss, [w]);
    // dL/dw = deepᵀ @ 1: a handful of nodes, none of them differentiating the tanh chain
    assert.ok(kit.g.size - before < 8, `built ${kit.g.size - before} gradient nodes`);
    assert.ok(!topoOrder([gw]).some((n) => n.id >= before && n.op === "mul"));
  });

  test("a parameter the loss does not depend on gets zeros; a non-scalar loss is refused", () => {
    const kit = new GraphKit();
    const a = kit.param("a", [2]);
    const b = kit.param("b", [3]);
    const loss = sumAll(kit, kit.t.mul(a, a));
    const [, gb] = gradients(kit.g, loss, [a, b]);
    const [v] = interpret([gb], {
      dims: {},
      inputs: new Map(),
      params: new Map([
        ["a", tensor([2], [1, 2])],
        ["b", tensor([3])],
      ]),
    });
    assert.deepEqual([...v.data], [0, 0, 0]);
    assert.throws(() => gradients(kit.g, a, [a]), /scalar loss/);
  });
});
