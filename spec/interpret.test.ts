import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ArgError, type ArgValue, BuiltinArgs, type BuiltinContext, builtins } from "../compiler/builtins.ts";
import { type Dim, type Shape, dimAdd, dimMul, shapeEval, shapeStr, sym } from "../compiler/dims.ts";
import { erf } from "../compiler/erf.ts";
import { GraphBuilder, topoOrder } from "../compiler/graph.ts";
import { type EvalEnv, evalRules, interpret } from "../compiler/interpret.ts";
import type { DType, Node } from "../compiler/ir.ts";
import { ShapeError } from "../compiler/shape-rules.ts";
import { TensorOps } from "../compiler/tensor-ops.ts";
import { numel, type Tensor, tensor } from "../compiler/tensor.ts";
import { intV, tensorV, type Value } from "../compiler/values.ts";

// ---------------------------------------------------------------------------
// Naive tensor helpers: index arithmetic written out longhand, independent of
// the interpreter's strided copies.

function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let k = shape.length - 1; k >= 0; k--) {
    idx[k] = i % shape[k];
    i = Math.floor(i / shape[k]);
  }
  return idx;
}

function ravel(idx: readonly number[], shape: readonly number[]): number {
  let off = 0;
  for (let k = 0; k < shape.length; k++) {
    assert.ok(idx[k] >= 0 && idx[k] < shape[k], `index [${idx.join(", ")}] outside [${shape.join(", ")}]`);
    off = off * shape[k] + idx[k];
  }
  return off;
}

const at = (t: Tensor, idx: readonly number[]): number => t.data[ravel(idx, t.shape)];

/** Builds a tensor by evaluating `f` at every multi-index. */
function build(shape: readonly number[], f: (idx: number[]) => number): Tensor {
  const n = numel(shape);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = f(unravel(i, shape));
  return tensor(shape, data);
}

const same = (a: number, b: number) => a === b || (Number.isNaN(a) && Number.isNaN(b));

/** Shapes equal; elements equal (NaN matches NaN) or within `tol` relative/absolute. */
function assertClose(actual: Tensor, expected: Tensor, tol = 0, what = ""): void {
  assert.deepEqual([...actual.shape], [...expected.shape], `${what} shape`);
  for (let i = 0; i < expected.data.length; i++) {
    const [a, e] = [actual.data[i], expected.data[i]];
    const ok = same(a, e) || Math.abs(a - e) <= tol * Math.max(1, Math.abs(e));
    if (!ok) assert.fail(`${what} at [${unravel(i, expected.shape).join(", ")}] of [${expected.shape.join(", ")}]: got ${a}, want ${e}`);
  }
}

// ---------------------------------------------------------------------------
// Graph fixture: evaluates node by node, checking every intermediate's shape
// against its shape rule, then cross-checks the roots with interpret().

type AnyEval = (n: Node, src: readonly Tensor[], env: EvalEnv) => Tensor;

function evalChecked(roots: readonly Node[], env: EvalEnv): Tensor[] {
  const vals = new Map<number, Tensor>();
  for (const n of topoOrder(roots)) {
    const t = (evalRules[n.op] as AnyEval)(
      n,
      n.src.map((s) => vals.get(s.id)!),
      env,
    );
    assert.deepEqual([...t.shape], shapeEval(n.shape, env.dims), `${n.op} node ${n.id}: interpreter shape differs from shape rule ${shapeStr(n.shape)}`);
    assert.equal(t.data.length, numel(t.shape), `${n.op} node ${n.id}: data length`);
    vals.set(n.id, t);
  }
  const out = interpret(roots, env);
  out.forEach((t, i) => assertClose(t, vals.get(roots[i].id)!, 0, "interpret() vs node-by-node"));
  return out;
}

function fixture() {
  const g = new GraphBuilder();
  const ops = new TensorOps(g);
  const inputs = new Map<string, Tensor>();
  const input = (name: string, t: Tensor, dtype: DType = "f32", shape: Shape = t.shape): Node => {
    inputs.set(name, t);
    return g.make("input", [], { name, shape, dtype });
  };
  const run = (roots: Node[], dims: Record<string, number> = {}) => evalChecked(roots, { dims, inputs, params: new Map() });
  const run1 = (root: Node, dims: Record<string, number> = {}) => run([root], dims)[0];
  return { g, ops, input, run, run1 };
}

// ---------------------------------------------------------------------------
// Arbitraries: ranks 1..4, lots of size-1 and odd dims, an occasional empty one.

const dimArb = fc.oneof(
  { arbitrary: fc.constant(1), weight: 3 },
  { arbitrary: fc.integer({ min: 2, max: 5 }), weight: 4 },
  { arbitrary: fc.constant(0), weight: 1 },
);
const shapeArb = (minRank = 1, maxRank = 4, dim = dimArb) => fc.array(dim, { minLength: minRank, maxLength: maxRank });
const valArb = fc.oneof(fc.integer({ min: -3, max: 3 }), fc.double({ min: -8, max: 8, noNaN: true }));
const dataArb = (shape: readonly number[], v: fc.Arbitrary<number> = valArb) =>
  fc.array(v, { minLength: numel(shape), maxLength: numel(shape) }).map((d) => tensor(shape, d));
const tensorArb = (shape = shapeArb(), v: fc.Arbitrary<number> = valArb) => shape.chain((s) => dataArb(s, v));
/** a tensor plus a valid axis of it */
const withAxis = (t: fc.Arbitrary<Tensor>) => t.chain((x) => fc.tuple(fc.constant(x), fc.nat(x.shape.length - 1)));

// ---------------------------------------------------------------------------

describe("interpreter: elementwise ops", () => {
  const unaryRefs = {
    neg: (x: number) => -x,
    recip: (x: number) => 1 / x,
    exp: Math.exp,
    log: Math.log,
    sqrt: Math.sqrt,
    sin: Math.sin,
    cos: Math.cos,
    tanh: Math.tanh,
    erf,
  } as const;

  test("unary math matches Math.*", () => {
    fc.assert(
      fc.property(tensorArb(), (x) => {
        const { g, input, run } = fixture();
        const a = input("a", x);
        const names = Object.keys(unaryRefs) as (keyof typeof unaryRefs)[];
        const outs = run(names.map((op) => g.make(op, [a], {})));
        names.forEach((op, i) =>
          assertClose(
            outs[i],
            build(x.shape, (idx) => unaryRefs[op](at(x, idx))),
            0,
            op,
          ),
        );
      }),
      { numRuns: 60 },
    );
  });

  test("cast truncates to int and back", () => {
    fc.assert(
      fc.property(tensorArb(), (x) => {
        const { g, input, run } = fixture();
        const a = input("a", x);
        const i = g.make("cast", [a], { dtype: "i32" });
        const f = g.make("cast", [i], { dtype: "f32" });
        assert.equal(i.dtype, "i32");
        const [ri, rf] = run([i, f]);
        const want = build(x.shape, (idx) => Math.trunc(at(x, idx)));
        assertClose(ri, want, 0, "i32");
        assertClose(rf, want, 0, "f32");
      }),
      { numRuns: 40 },
    );
  });

  test("binary ops and comparisons", () => {
    const refs = {
      add: (x: number, y: number) => x + y,
      mul: (x: number, y: number) => x * y,
      max: (x: number, y: number) => Math.max(x, y),
      cmplt: (x: number, y: number) => (x < y ? 1 : 0),
      cmpeq: (x: number, y: number) => (x === y ? 1 : 0),
    } as const;
    const pair = shapeArb().chain((s) => fc.tuple(dataArb(s), dataArb(s)));
    fc.assert(
      fc.property(pair, ([x, y]) => {
        const { g, input, run } = fixture();
        const [a, b] = [input("a", x), input("b", y)];
        const names = Object.keys(refs) as (keyof typeof refs)[];
        const outs = run(names.map((op) => g.make(op, [a, b], {})));
        names.forEach((op, i) =>
          assertClose(
            outs[i],
            build(x.shape, (idx) => refs[op](at(x, idx), at(y, idx))),
            0,
            op,
          ),
        );
      }),
    );
  });

  test("max and rmax propagate NaN from either side", () => {
    const { g, input, run } = fixture();
    const a = input("a", tensor([3], [NaN, 1, 2]));
    const b = input("b", tensor([3], [0, NaN, 1]));
    const [m, r] = run([g.make("max", [a, b], {}), g.make("rmax", [b], { axis: 0 })]);
    assert.deepEqual([...m.data].map(Number.isNaN), [true, true, false]);
    assert.equal(m.data[2], 2);
    assert.ok(Number.isNaN(r.data[0]));
  });

  test("where picks by a non-zero condition", () => {
    const triple = shapeArb().chain((s) => fc.tuple(dataArb(s, fc.constantFrom(0, 1, -1, 0.5)), dataArb(s), dataArb(s)));
    fc.assert(
      fc.property(triple, ([c, x, y]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("where", [input("c", c), input("a", x), input("b", y)], {}));
        assertClose(
          out,
          build(c.shape, (idx) => (at(c, idx) !== 0 ? at(x, idx) : at(y, idx))),
        );
      }),
    );
  });
});

describe("interpreter: reductions", () => {
  test("sum and rmax along every axis, keepdim", () => {
    fc.assert(
      fc.property(tensorArb(), (x) => {
        const { g, input, run } = fixture();
        const a = input("a", x);
        for (let axis = 0; axis < x.shape.length; axis++) {
          const [s, m] = run([g.make("sum", [a], { axis }), g.make("rmax", [a], { axis })]);
          const outShape = x.shape.map((d, i) => (i === axis ? 1 : d));
          const fold = (init: number, f: (acc: number, v: number) => number) =>
            build(outShape, (idx) => {
              let acc = init;
              for (let j = 0; j < x.shape[axis]; j++)
                acc = f(
                  acc,
                  at(
                    x,
                    idx.map((v, i) => (i === axis ? j : v)),
                  ),
                );
              return acc;
            });
          assertClose(
            s,
            fold(0, (p, q) => p + q),
            0,
            `sum axis ${axis}`,
          );
          assertClose(m, fold(-Infinity, Math.max), 0, `rmax axis ${axis}`);
        }
      }),
    );
  });

  test("mean equals sum / n, with and without keepdim and negative axes", () => {
    fc.assert(
      fc.property(withAxis(tensorArb(shapeArb(1, 4, fc.integer({ min: 1, max: 5 })))), fc.boolean(), ([x, axis], keepdim) => {
        const { ops, input, run } = fixture();
        const a = input("a", x);
        const neg = axis - x.shape.length;
        const [m, s] = run([ops.mean(a, neg, keepdim), ops.sum(a, axis, keepdim)]);
        assertClose(
          m,
          tensor(
            s.shape,
            s.data.map((v) => v / x.shape[axis]),
          ),
          1e-14,
          "mean",
        );
        assert.equal(m.shape.length, keepdim ? x.shape.length : x.shape.length - 1);
      }),
    );
  });

  test("softmax rows sum to 1, match a naive softmax and ignore added constants", () => {
    const arb = fc.tuple(
      withAxis(tensorArb(shapeArb(1, 4, fc.integer({ min: 1, max: 5 })), fc.double({ min: -30, max: 30, noNaN: true }))),
      fc.double({ min: -100, max: 100, noNaN: true }),
    );
    fc.assert(
      fc.property(arb, ([[x, axis], c]) => {
        const { ops, input, run } = fixture();
        const a = input("a", x);
        const [p, q] = run([ops.softmax(a, axis), ops.softmax(ops.add(a, ops.scalar(c)), axis)]);
        const along = (idx: number[], j: number) => idx.map((v, i) => (i === axis ? j : v));
        const naive = build(x.shape, (idx) => {
          let m = -Infinity;
          for (let j = 0; j < x.shape[axis]; j++) m = Math.max(m, at(x, along(idx, j)));
          let z = 0;
          for (let j = 0; j < x.shape[axis]; j++) z += Math.exp(at(x, along(idx, j)) - m);
          return Math.exp(at(x, idx) - m) / z;
        });
        assertClose(p, naive, 1e-13, "softmax");
        assertClose(q, p, 1e-12, "softmax(x + c)");
        const rows = build(
          x.shape.map((d, i) => (i === axis ? 1 : d)),
          (idx) => {
            let s = 0;
            for (let j = 0; j < x.shape[axis]; j++) s += at(p, along(idx, j));
            return s;
          },
        );
        for (const s of rows.data) assert.ok(Math.abs(s - 1) < 1e-13, `row sums to ${s}`);
      }),
    );
  });
});

describe("interpreter: movement", () => {
  test("reshape keeps row-major order", () => {
    fc.assert(
      fc.property(tensorArb(), (x) => {
        const { g, input, run } = fixture();
        const a = input("a", x);
        const targets = [[numel(x.shape)], [...x.shape].reverse(), [1, ...x.shape, 1]];
        const outs = run(targets.map((shape) => g.make("reshape", [a], { shape })));
        outs.forEach((o, i) => assertClose(o, tensor(targets[i], x.data), 0, `reshape to [${targets[i]}]`));
      }),
    );
  });

  test("permute by index mapping", () => {
    const arb = tensorArb().chain((x) => {
      const axes = [...x.shape.keys()];
      return fc.tuple(fc.constant(x), fc.shuffledSubarray(axes, { minLength: axes.length, maxLength: axes.length }));
    });
    fc.assert(
      fc.property(arb, ([x, perm]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("permute", [input("a", x)], { perm }));
        // out[j0, j1, ...] = x[i] with i[perm[k]] = j[k]
        const want = build(
          perm.map((p) => x.shape[p]),
          (j) => {
            const i = new Array<number>(perm.length);
            perm.forEach((p, k) => (i[p] = j[k]));
            return at(x, i);
          },
        );
        assertClose(out, want, 0, `permute [${perm}]`);
      }),
    );
  });

  test("expand broadcasts size-1 dims", () => {
    const arb = shapeArb()
      .chain((to) => fc.tuple(fc.constant(to), fc.array(fc.boolean(), { minLength: to.length, maxLength: to.length })))
      .chain(([to, ones]) => fc.tuple(fc.constant(to), dataArb(to.map((d, i) => (ones[i] ? 1 : d)))));
    fc.assert(
      fc.property(arb, ([to, x]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("expand", [input("a", x)], { shape: to }));
        assertClose(
          out,
          build(to, (idx) =>
            at(
              x,
              idx.map((v, i) => (x.shape[i] === 1 ? 0 : v)),
            ),
          ),
        );
      }),
    );
  });

  test("numpy broadcasting of binary ops across ranks", () => {
    const operand = (to: number[]) =>
      fc
        .tuple(fc.nat(to.length), fc.array(fc.boolean(), { minLength: to.length, maxLength: to.length }))
        .map(([drop, ones]) => to.slice(drop).map((d, i) => (ones[i + drop] ? 1 : d)))
        .chain((s) => dataArb(s));
    const arb = shapeArb(0, 4).chain((to) => fc.tuple(fc.constant(to), operand(to), operand(to)));
    fc.assert(
      fc.property(arb, ([to, x, y]) => {
        const { ops, input, run1 } = fixture();
        const out = run1(ops.add(input("a", x), input("b", y)));
        // the result shape is the broadcast of both (may be smaller than `to` where both hold a 1)
        const r = Math.max(x.shape.length, y.shape.length);
        const get = (t: Tensor, idx: number[]) =>
          at(
            t,
            idx.slice(r - t.shape.length).map((v, i) => (t.shape[i] === 1 ? 0 : v)),
          );
        const shape = [...Array(r).keys()].map((i) => Math.max(x.shape[i - r + x.shape.length] ?? 1, y.shape[i - r + y.shape.length] ?? 1));
        const bshape = shape.map((d, i) => ((x.shape[i - r + x.shape.length] ?? 1) === 0 || (y.shape[i - r + y.shape.length] ?? 1) === 0 ? 0 : d));
        assertClose(
          out,
          build(bshape, (idx) => get(x, idx) + get(y, idx)),
        );
      }),
    );
  });

  test("slice", () => {
    const arb = tensorArb().chain((x) =>
      fc.tuple(fc.constant(x), fc.tuple(...x.shape.map((d) => fc.tuple(fc.nat(d), fc.nat(d)).map(([p, q]) => (p <= q ? [p, q] : [q, p]))))),
    );
    fc.assert(
      fc.property(arb, ([x, bounds]) => {
        const { g, input, run1 } = fixture();
        const [start, end] = [bounds.map((b) => b[0]), bounds.map((b) => b[1])];
        const out = run1(g.make("slice", [input("a", x)], { start, end }));
        assertClose(
          out,
          build(
            end.map((e, i) => e - start[i]),
            (idx) =>
              at(
                x,
                idx.map((v, i) => v + start[i]),
              ),
          ),
        );
      }),
    );
  });

  test("pad with zeros", () => {
    const arb = tensorArb().chain((x) => {
      const w = fc.array(fc.nat(2), { minLength: x.shape.length, maxLength: x.shape.length });
      return fc.tuple(fc.constant(x), w, w);
    });
    fc.assert(
      fc.property(arb, ([x, before, after]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("pad", [input("a", x)], { before, after }));
        const shape = x.shape.map((d, i) => d + before[i] + after[i]);
        assertClose(
          out,
          build(shape, (idx) => {
            const i = idx.map((v, k) => v - before[k]);
            return i.every((v, k) => v >= 0 && v < x.shape[k]) ? at(x, i) : 0;
          }),
        );
      }),
    );
  });

  test("concat along each axis", () => {
    const arb = fc
      .tuple(shapeArb(), fc.nat(3), fc.array(fc.nat(3), { minLength: 1, maxLength: 4 }))
      .map(([s, ax, lens]) => ({ axis: ax % s.length, shapes: lens.map((l) => s.map((d, i) => (i === ax % s.length ? l : d))) }))
      .chain(({ axis, shapes }) => fc.tuple(fc.constant(axis), fc.tuple(...shapes.map((s) => dataArb(s)))));
    fc.assert(
      fc.property(arb, ([axis, xs]) => {
        const { g, input, run1 } = fixture();
        const out = run1(
          g.make(
            "concat",
            xs.map((x, i) => input(`x${i}`, x)),
            { axis },
          ),
        );
        const shape = xs[0].shape.map((d, i) => (i === axis ? xs.reduce((acc, x) => acc + x.shape[axis], 0) : d));
        assertClose(
          out,
          build(shape, (idx) => {
            let j = idx[axis];
            for (const x of xs) {
              if (j < x.shape[axis])
                return at(
                  x,
                  idx.map((v, i) => (i === axis ? j : v)),
                );
              j -= x.shape[axis];
            }
            throw new Error("unreachable");
          }),
        );
      }),
    );
  });

  test("unsqueeze, squeeze, stack and transposeLast", () => {
    fc.assert(
      fc.property(
        shapeArb().chain((s) => fc.tuple(dataArb(s), dataArb(s), fc.integer({ min: -(s.length + 1), max: s.length }))),
        ([x, y, axis]) => {
          const { ops, input, run } = fixture();
          const [a, b] = [input("a", x), input("b", y)];
          const u = ops.unsqueeze(a, axis);
          const ax = axis < 0 ? axis + x.shape.length + 1 : axis;
          const st = ops.stack([a, b], axis);
          const outs = run([u, ops.squeeze(u, axis), st, ...(x.shape.length >= 2 ? [ops.transposeLast(a)] : [])]);
          const shapeU = [...x.shape.slice(0, ax), 1, ...x.shape.slice(ax)];
          assertClose(outs[0], tensor(shapeU, x.data), 0, "unsqueeze");
          assertClose(outs[1], x, 0, "squeeze");
          const drop = (idx: number[]) => idx.filter((_, i) => i !== ax);
          assertClose(
            outs[2],
            build([...x.shape.slice(0, ax), 2, ...x.shape.slice(ax)], (idx) => at(idx[ax] === 0 ? x : y, drop(idx))),
            0,
            "stack",
          );
          if (outs[3]) {
            const r = x.shape.length;
            const swap = (idx: readonly number[]) => [...idx.slice(0, r - 2), idx[r - 1], idx[r - 2]];
            assertClose(
              outs[3],
              build(swap(x.shape), (idx) => at(x, swap(idx))),
              0,
              "transposeLast",
            );
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe("interpreter: contraction and lookup", () => {
  /** matching operands for the primitive: equal ranks, batch dims equal or 1 on one side */
  const matmulArb = fc
    .record({
      batch: fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.constantFrom("both", "a1", "b1", "both1")), { maxLength: 2 }),
      m: fc.integer({ min: 0, max: 4 }),
      k: fc.integer({ min: 0, max: 4 }),
      n: fc.integer({ min: 0, max: 4 }),
    })
    .chain(({ batch, m, k, n }) => {
      const ab = batch.map(([d, how]) => (how === "both" ? [d, d] : how === "a1" ? [1, d] : how === "b1" ? [d, 1] : [1, 1]));
      return fc.tuple(dataArb([...ab.map((p) => p[0]), m, k]), dataArb([...ab.map((p) => p[1]), k, n]));
    });

  /** numpy matmul with broadcast batch dims, three nested loops */
  function naiveMatmul(x: Tensor, y: Tensor): Tensor {
    const r = Math.max(x.shape.length, y.shape.length);
    const lift = (t: Tensor) => tensor([...Array(r - t.shape.length).fill(1), ...t.shape], t.data);
    const [a, b] = [lift(x), lift(y)];
    const batch = a.shape.slice(0, r - 2).map((d, i) => (d === 1 ? b.shape[i] : d));
    const [m, k, n] = [a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]];
    return build([...batch, m, n], (idx) => {
      const bi = idx.slice(0, r - 2);
      const pick = (t: Tensor) => bi.map((v, d) => (t.shape[d] === 1 ? 0 : v));
      let s = 0;
      for (let p = 0; p < k; p++) s += at(a, [...pick(a), idx[r - 2], p]) * at(b, [...pick(b), p, idx[r - 1]]);
      return s;
    });
  }

  test("matmul primitive with broadcast batch dims", () => {
    fc.assert(
      fc.property(matmulArb, ([x, y]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("matmul", [input("a", x), input("b", y)], {}));
        assertClose(out, naiveMatmul(x, y), 1e-13);
      }),
    );
  });

  test("TensorOps.matmul lifts operands of different ranks", () => {
    const arb = fc
      .record({
        lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
        aRank: fc.integer({ min: 2, max: 4 }),
        bRank: fc.integer({ min: 2, max: 4 }),
        m: fc.integer({ min: 1, max: 3 }),
        k: fc.integer({ min: 1, max: 4 }),
        n: fc.integer({ min: 1, max: 3 }),
      })
      .chain(({ lead, aRank, bRank, m, k, n }) => {
        const batch = (rank: number) => lead.slice(Math.max(0, lead.length - (rank - 2)));
        return fc.tuple(dataArb([...batch(aRank), m, k]), dataArb([...batch(bRank), k, n]));
      });
    fc.assert(
      fc.property(arb, ([x, y]) => {
        const { ops, input, run1 } = fixture();
        const out = run1(ops.matmul(input("a", x), input("b", y)));
        assertClose(out, naiveMatmul(x, y), 1e-13);
      }),
    );
  });

  test("gather rows by int index", () => {
    const arb = fc
      .tuple(fc.integer({ min: 1, max: 5 }), shapeArb(0, 2), shapeArb(0, 2))
      .chain(([rows, rest, idxShape]) => fc.tuple(dataArb([rows, ...rest]), dataArb(idxShape, fc.nat(rows - 1))));
    fc.assert(
      fc.property(arb, ([table, idx]) => {
        const { g, input, run1 } = fixture();
        const out = run1(g.make("gather", [input("t", table), input("i", idx, "i32")], {}));
        const rest = table.shape.slice(1);
        assertClose(
          out,
          build([...idx.shape, ...rest], (j) => at(table, [at(idx, j.slice(0, idx.shape.length)), ...j.slice(idx.shape.length)])),
        );
      }),
    );
  });

  test("gather rejects out-of-range indices", () => {
    const { g, input, run1 } = fixture();
    const node = g.make("gather", [input("t", tensor([2, 2], [1, 2, 3, 4])), input("i", tensor([2], [1, 2]), "i32")], {});
    assert.throws(() => run1(node), /gather index 2 out of range/);
  });
});

describe("interpreter: sources and errors", () => {
  test("const, size and arange", () => {
    const { g, ops, run } = fixture();
    const T = sym("T");
    const [c, s, a, s0] = run([ops.scalar(2.5), ops.size(dimAdd(T, 3)), ops.arange(dimAdd(T, 1)), g.make("arange", [], { n: 0 })], { T: 4 });
    assertClose(c, tensor([], [2.5]));
    assertClose(s, tensor([], [7]));
    assertClose(a, tensor([5], [0, 1, 2, 3, 4]));
    assertClose(s0, tensor([0], []));
  });

  test("inputs are checked against their declared shape", () => {
    const { g, input, run1 } = fixture();
    const x = input("x", tensor([2, 3]), "f32", [sym("B"), 3]);
    assert.throws(() => run1(x, { B: 3 }), /input `x` has shape \[2, 3\], expected \[3, 3\]/);
    assert.throws(() => run1(g.make("input", [], { name: "y", shape: [1], dtype: "f32" })), /missing input `y`/);
    assert.throws(() => run1(x, {}), /no value for dimension symbol B/);
  });

  test("shared subexpressions and repeated roots evaluate once and stay available", () => {
    const { g, input, run } = fixture();
    const a = input("a", tensor([2], [1, 2]));
    const e = g.make("exp", [a], {});
    const m = g.make("mul", [e, e], {});
    const [r1, r2, r3] = run([m, e, m]);
    assertClose(r1, tensor([2], [Math.exp(1) ** 2, Math.exp(2) ** 2]), 1e-15);
    assertClose(r2, tensor([2], [Math.exp(1), Math.exp(2)]));
    assert.equal(r3, r1);
  });
});

describe("erf", () => {
  // reference values from mpmath at 30 digits
  const known: [number, number][] = [
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [0.001, 0.0011283787909692365],
    [0.1, 0.1124629160182849],
    [3, 0.9999779095030014],
    [4, 0.9999999845827421],
    [5, 0.9999999999984626],
    [5.5, 0.9999999999999927],
  ];

  test("known values to 1e-14, and odd symmetry", () => {
    for (const [x, v] of known) {
      assert.ok(Math.abs(erf(x) - v) <= 1e-14, `erf(${x}) = ${erf(x)}, want ${v}`);
      assert.ok(Math.abs(erf(-x) + v) <= 1e-14, `erf(${-x}) = ${erf(-x)}, want ${-v}`);
    }
    assert.equal(erf(0), 0);
    assert.equal(erf(Infinity), 1);
    assert.equal(erf(-Infinity), -1);
    assert.ok(Number.isNaN(erf(NaN)));
  });

  test("erf(-x) = -erf(x), |erf(x)| ≤ 1, monotone", () => {
    fc.assert(
      fc.property(fc.double({ min: -10, max: 10, noNaN: true }), fc.double({ min: -10, max: 10, noNaN: true }), (x, y) => {
        assert.ok(erf(-x) === -erf(x), `erf(${-x}) = ${erf(-x)}, erf(${x}) = ${erf(x)}`);
        assert.ok(Math.abs(erf(x)) <= 1, `erf(${x}) = ${erf(x)}`);
        if (x < y) assert.ok(erf(x) <= erf(y) + 1e-15, `erf(${x}) > erf(${y})`);
      }),
      { numRuns: 2000 },
    );
  });

  test("|erf(x)| ≤ 1 on a fine grid where the series is near 1", () => {
    for (let x = 3; x <= 6.5; x += 1e-4) assert.ok(erf(x) <= 1, `erf(${x}) = ${erf(x)}`);
  });
});

describe("symbolic dims at run time", () => {
  const B = sym("B");
  const T = sym("T");
  const T3 = dimAdd(T, 3);

  /** x: [B, T, 4] with 3 constant prefix rows prepended -> [B, T + 3, 4] */
  function buildGraph() {
    const f = fixture();
    const { ops } = f;
    const x = f.g.make("input", [], { name: "x", shape: [B, T, 4], dtype: "f32" });
    const pre = f.g.make("input", [], { name: "pre", shape: [3, 4], dtype: "f32" });
    const cat = ops.concat([ops.expand(pre, [B, 3, 4]), x], 1);
    assert.equal(shapeStr(cat.shape), "[B, T + 3, 4]");
    const flat = ops.reshape(cat, [B, dimMul(T3, 4)!]);
    assert.equal(shapeStr(flat.shape), "[B, 4*T + 12]");
    const back = ops.reshape(flat, [B, T3, 2, 2]);
    const mean = ops.mean(cat, 1);
    const tail = ops.slice(cat, 1, 3, T3);
    const padded = ops.pad(x, 1, 3, 0);
    const scores = ops.softmax(ops.matmul(cat, ops.transposeLast(cat)), -1);
    const pos = ops.add(cat, ops.unsqueeze(ops.arange(T3), -1));
    return { roots: { cat, flat, back, mean, tail, padded, scores, pos } };
  }

  function check(b: number, t: number, xs: Tensor, pre: Tensor) {
    const { roots } = buildGraph();
    const names = Object.keys(roots) as (keyof typeof roots)[];
    const nodes = names.map((n) => roots[n]);
    const env = {
      dims: { B: b, T: t },
      inputs: new Map([
        ["x", xs],
        ["pre", pre],
      ]),
      params: new Map(),
    };
    const out = Object.fromEntries(evalChecked(nodes, env).map((o, i) => [names[i], o])) as Record<keyof typeof roots, Tensor>;

    const cat = build([b, t + 3, 4], ([i, j, k]) => (j < 3 ? at(pre, [j, k]) : at(xs, [i, j - 3, k])));
    assertClose(out.cat, cat, 0, "cat");
    assertClose(out.flat, tensor([b, 4 * t + 12], cat.data), 0, "flat");
    assertClose(out.back, tensor([b, t + 3, 2, 2], cat.data), 0, "back");
    assertClose(
      out.mean,
      build([b, 4], ([i, k]) => {
        let s = 0;
        for (let j = 0; j < t + 3; j++) s += at(cat, [i, j, k]);
        return s / (t + 3);
      }),
      1e-14,
      "mean",
    );
    assertClose(out.tail, xs, 0, "tail");
    assertClose(
      out.padded,
      build([b, t + 3, 4], ([i, j, k]) => (j < 3 ? 0 : at(xs, [i, j - 3, k]))),
      0,
      "padded",
    );
    assertClose(
      out.pos,
      build([b, t + 3, 4], ([i, j, k]) => at(cat, [i, j, k]) + j),
      0,
      "pos",
    );
    const logits = build([b, t + 3, t + 3], ([i, j, l]) => {
      let s = 0;
      for (let k = 0; k < 4; k++) s += at(cat, [i, j, k]) * at(cat, [i, l, k]);
      return s;
    });
    assertClose(
      out.scores,
      build([b, t + 3, t + 3], ([i, j, l]) => {
        let m = -Infinity;
        for (let q = 0; q < t + 3; q++) m = Math.max(m, at(logits, [i, j, q]));
        let z = 0;
        for (let q = 0; q < t + 3; q++) z += Math.exp(at(logits, [i, j, q]) - m);
        return Math.exp(at(logits, [i, j, l]) - m) / z;
      }),
      1e-12,
      "scores",
    );
  }

  test("one graph, evaluated under several {B, T} bindings", () => {
    const arb = fc
      .record({ b: fc.integer({ min: 1, max: 3 }), t: fc.integer({ min: 0, max: 6 }) })
      .chain(({ b, t }) => fc.tuple(fc.constant(b), fc.constant(t), dataArb([b, t, 4]), dataArb([3, 4])));
    fc.assert(
      fc.property(arb, ([b, t, xs, pre]) => check(b, t, xs, pre)),
      { numRuns: 40 },
    );
  });

  test("the same node objects serve different bindings", () => {
    const { roots } = buildGraph();
    const pre = build([3, 4], ([j, k]) => j * 10 + k);
    for (const [b, t] of [
      [1, 1],
      [2, 5],
      [3, 0],
    ]) {
      const xs = build([b, t, 4], ([i, j, k]) => 100 * i + 10 * j + k + 0.5);
      const [cat] = evalChecked([roots.cat], {
        dims: { B: b, T: t },
        inputs: new Map([
          ["x", xs],
          ["pre", pre],
        ]),
        params: new Map(),
      });
      assert.deepEqual(cat.shape, [b, t + 3, 4]);
    }
  });
});

/** The builtins' context in full mode, not training: nothing is cached, dropout is the identity. */
const FULL_MODE: BuiltinContext = {
  mode: "full",
  training: false,
  dropoutStream: () => assert.fail("no dropout outside training"),
  state: () => assert.fail("no state in full mode"),
  update: () => assert.fail("no state in full mode"),
  cachePos: () => assert.fail("no cache_pos in full mode"),
  context: () => assert.fail("no context in full mode"),
};

describe("builtins", () => {
  const span = { file: "spec.dehvf", start: 0, end: 0 };
  const arg = (value: Value): ArgValue => ({ value, span });

  function call(ops: TensorOps, name: string, positional: Value[], named: Record<string, Value> = {}): Node {
    const b = builtins[name];
    const args = new BuiltinArgs(name, b.params, positional.map(arg), new Map(Object.entries(named).map(([k, v]) => [k, arg(v)])), (v) => {
      if (v.kind !== "tensor") throw new Error(`not a tensor: ${v.kind}`);
      return v.node;
    });
    const out = b.impl(args, ops, FULL_MODE);
    assert.equal(out.kind, "tensor");
    return (out as { node: Node }).node;
  }

  test("split_heads lays out [..., N, h*dh] as [..., h, N, dh]; merge_heads undoes it", () => {
    const arb = fc
      .record({
        lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
        n: fc.integer({ min: 1, max: 4 }),
        h: fc.integer({ min: 1, max: 4 }),
        dh: fc.integer({ min: 1, max: 3 }),
      })
      .chain(({ lead, n, h, dh }) => fc.tuple(fc.constant(h), dataArb([...lead, n, h * dh])));
    fc.assert(
      fc.property(arb, ([h, x]) => {
        const { ops, input, run } = fixture();
        const a = input("x", x);
        const split = call(ops, "split_heads", [tensorV(a), intV(h)]);
        const merged = call(ops, "merge_heads", [tensorV(split)]);
        const [s, m] = run([split, merged]);
        const r = x.shape.length;
        const [n, dh] = [x.shape[r - 2], x.shape[r - 1] / h];
        const lead = x.shape.slice(0, r - 2);
        assertClose(
          s,
          build([...lead, h, n, dh], (idx) => at(x, [...idx.slice(0, r - 2), idx[r - 1], idx[r - 2] * dh + idx[r]])),
          0,
          "split_heads",
        );
        assertClose(m, x, 0, "merge_heads(split_heads(x))");
      }),
    );
  });

  test("split_heads refuses a width the heads do not divide", () => {
    const { ops, g } = fixture();
    const x = g.make("input", [], { name: "x", shape: [2, 5, 6], dtype: "f32" });
    assert.throws(() => call(ops, "split_heads", [tensorV(x), intV(4)]), ShapeError);
  });

  test("patches matches a naive patch extraction", () => {
    const arb = fc
      .record({
        b: fc.integer({ min: 1, max: 2 }),
        c: fc.integer({ min: 1, max: 3 }),
        p: fc.integer({ min: 1, max: 3 }),
        hp: fc.integer({ min: 1, max: 3 }),
        wp: fc.integer({ min: 1, max: 3 }),
      })
      .chain(({ b, c, p, hp, wp }) => fc.tuple(fc.constant(p), dataArb([b, c, hp * p, wp * p])));
    fc.assert(
      fc.property(arb, ([p, img]) => {
        const { ops, input, run1 } = fixture();
        const out = run1(call(ops, "patches", [tensorV(input("img", img)), intV(p)]));
        const [b, c, hh, ww] = img.shape;
        const [hp, wp] = [hh / p, ww / p];
        // naive: walk patches in row-major patch order, then channel, row-in-patch, col-in-patch
        const data: number[] = [];
        for (let bi = 0; bi < b; bi++)
          for (let i = 0; i < hp; i++)
            for (let j = 0; j < wp; j++)
              for (let ch = 0; ch < c; ch++) for (let r = 0; r < p; r++) for (let s = 0; s < p; s++) data.push(at(img, [bi, ch, i * p + r, j * p + s]));
        assertClose(out, tensor([b, hp * wp, c * p * p], data));
      }),
      { numRuns: 60 },
    );
  });

  test("repeat_interleave repeats each slice n times consecutively", () => {
    const arb = fc.tuple(withAxis(tensorArb(shapeArb(1, 4))), fc.integer({ min: 1, max: 3 }));
    fc.assert(
      fc.property(arb, ([[x, axis], n]) => {
        const { ops, input, run1 } = fixture();
        const out = run1(call(ops, "repeat_interleave", [tensorV(input("x", x)), intV(n)], { axis: intV(axis) }));
        const shape = x.shape.map((d, i) => (i === axis ? d * n : d));
        assertClose(
          out,
          build(shape, (idx) =>
            at(
              x,
              idx.map((v, i) => (i === axis ? Math.floor(v / n) : v)),
            ),
          ),
        );
      }),
    );
  });

  test("repeat_interleave of kv heads, as for grouped-query attention", () => {
    const { ops, input, run1 } = fixture();
    // [B=1, h=2, N=2, dh=1]: head 0 holds 1, 2 and head 1 holds 3, 4
    const kv = input("kv", tensor([1, 2, 2, 1], [1, 2, 3, 4]));
    const out = run1(call(ops, "repeat_interleave", [tensorV(kv), intV(3), intV(1)]));
    assert.deepEqual(out.shape, [1, 6, 2, 1]);
    assert.deepEqual([...out.data], [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
  });

  test("repeat_interleave along a symbolic axis", () => {
    const { ops, g } = fixture();
    const B = sym("B");
    const T = sym("T");
    const x = g.make("input", [], { name: "x", shape: [B, T, 2], dtype: "f32" });
    const node = call(ops, "repeat_interleave", [tensorV(x), intV(2), intV(1)]);
    assert.equal(shapeStr(node.shape), "[B, 2*T, 2]");
    for (const [b, t] of [
      [1, 3],
      [2, 1],
    ]) {
      const xs = build([b, t, 2], ([i, j, k]) => 100 * i + 10 * j + k);
      const env = { dims: { B: b, T: t }, inputs: new Map([["x", xs]]), params: new Map() };
      const [out] = evalChecked([node], env);
      assertClose(
        out,
        build([b, 2 * t, 2], ([i, j, k]) => at(xs, [i, Math.floor(j / 2), k])),
      );
    }
  });

  test("argument errors name the builtin", () => {
    const { ops, g } = fixture();
    const x = g.make("input", [], { name: "x", shape: [2, 4], dtype: "f32" });
    assert.throws(
      () => call(ops, "split_heads", [tensorV(x)]),
      (e: unknown) => e instanceof ArgError && /split_heads\(\) needs argument `heads`/.test(e.message),
    );
    assert.throws(() => call(ops, "split_heads", [tensorV(x), intV(sym("T") as Dim)]), ArgError);
  });
});
