import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  type Dim,
  type Shape,
  SymDim,
  dimAdd,
  dimDivExact,
  dimEq,
  dimEval,
  dimMul,
  dimStr,
  dimSub,
  numelKey,
  shapeEq,
  shapeEval,
  shapeStr,
  sym,
  symbolsOf,
} from "../compiler/dims.ts";

const SYMS = ["B", "N", "T"] as const;

/** A linear form over B, N, T with small coefficients; often collapses to a plain number. */
const dimArb: fc.Arbitrary<Dim> = fc
  .record({
    coeffs: fc.tuple(...SYMS.map(() => fc.oneof(fc.constant(0), fc.integer({ min: -4, max: 4 })))),
    constant: fc.integer({ min: -50, max: 50 }),
  })
  .map(({ coeffs, constant }) => SymDim.of(new Map(SYMS.map((s, i) => [s, coeffs[i]])), constant));

/** Dims that make sense as tensor sizes: non-negative constants or `k*S + c` with k, c ≥ 0. */
const sizeDimArb: fc.Arbitrary<Dim> = fc.oneof(
  fc.integer({ min: 0, max: 12 }),
  fc
    .record({ s: fc.constantFrom(...SYMS), k: fc.integer({ min: 1, max: 4 }), c: fc.integer({ min: 0, max: 9 }) })
    .map(({ s, k, c }) => SymDim.of(new Map([[s, k]]), c)),
);

const envArb = fc.record({ B: fc.integer({ min: -20, max: 20 }), N: fc.integer({ min: -20, max: 20 }), T: fc.integer({ min: -20, max: 20 }) });

const isSym = (d: Dim): d is SymDim => typeof d !== "number";

describe("dims algebra", () => {
  test("add then sub is the identity, both ways", () => {
    fc.assert(
      fc.property(dimArb, dimArb, (a, b) => {
        assert.ok(dimEq(dimSub(dimAdd(a, b), b), a));
        assert.ok(dimEq(dimAdd(dimSub(a, b), b), a));
        assert.ok(dimEq(dimSub(a, a), 0));
      }),
    );
  });

  test("add is commutative and associative", () => {
    fc.assert(
      fc.property(dimArb, dimArb, dimArb, (a, b, c) => {
        assert.ok(dimEq(dimAdd(a, b), dimAdd(b, a)));
        assert.ok(dimEq(dimAdd(dimAdd(a, b), c), dimAdd(a, dimAdd(b, c))));
      }),
    );
  });

  test("dimEq is reflexive and symmetric, and agrees with evaluation", () => {
    fc.assert(
      fc.property(dimArb, dimArb, fc.array(envArb, { minLength: 4, maxLength: 4 }), (a, b, envs) => {
        assert.ok(dimEq(a, a));
        assert.equal(dimEq(a, b), dimEq(b, a));
        // equal linear forms evaluate equally everywhere
        if (dimEq(a, b)) for (const env of envs) assert.equal(dimEval(a, env), dimEval(b, env));
        // forms that differ must differ somewhere: their difference is a non-zero form
        if (!dimEq(a, b)) assert.ok(!dimEq(dimSub(a, b), 0));
      }),
    );
  });

  test("dimEq does not depend on how a form was built", () => {
    fc.assert(
      fc.property(dimArb, (a) => {
        if (!isSym(a)) return;
        const reversed = SymDim.of(new Map([...a.terms].reverse()), a.constant);
        assert.ok(dimEq(a, reversed));
        // rebuilt from symbol-by-symbol additions
        let b: Dim = a.constant;
        for (const [n, c] of [...a.terms].reverse()) b = dimAdd(b, dimMul(sym(n), c)!);
        assert.ok(dimEq(a, b));
      }),
    );
  });

  test("zero coefficients vanish: a form without symbols is a plain number", () => {
    const t = sym("T");
    const d = dimSub(dimAdd(t, 7), t);
    assert.equal(d, 7);
    assert.equal(typeof d, "number");
    assert.equal(dimMul(t, 0), 0);
    assert.equal(SymDim.of(new Map([["T", 0]]), 3), 3);
  });

  test("dimDivExact(dimMul(x, k), k) == x", () => {
    fc.assert(
      fc.property(
        dimArb,
        fc.integer({ min: -9, max: 9 }).filter((k) => k !== 0),
        (x, k) => {
          const y = dimMul(x, k);
          assert.ok(y !== undefined);
          const back = dimDivExact(y, k);
          assert.ok(back !== undefined && dimEq(back, x), `${dimStr(x)} * ${k} / ${k} gave ${back === undefined ? "undefined" : dimStr(back)}`);
          // and the other operand order
          assert.ok(dimEq(dimMul(k, x)!, y));
        },
      ),
    );
  });

  test("dimDivExact refuses what does not divide", () => {
    const t = sym("T");
    assert.equal(dimDivExact(dimAdd(dimMul(t, 4)!, 2), 4), undefined);
    assert.equal(dimDivExact(t, 2), undefined);
    assert.equal(dimDivExact(7, 2), undefined);
    assert.equal(dimDivExact(6, 0), undefined);
    assert.equal(dimDivExact(6, 1.5), undefined);
    assert.ok(dimEq(dimDivExact(dimAdd(dimMul(t, 4)!, 8), 4)!, dimAdd(t, 2)));
  });

  test("the product of two symbolic dims is not linear", () => {
    assert.equal(dimMul(sym("B"), sym("T")), undefined);
    assert.ok(dimEq(dimMul(3, 4)!, 12));
  });

  test("dimEval is a homomorphism for add, sub and scalar mul", () => {
    fc.assert(
      fc.property(dimArb, dimArb, fc.integer({ min: -9, max: 9 }), envArb, (a, b, k, env) => {
        // `===` rather than assert.equal: 0 * -1 may give -0, which is the same size
        assert.ok(dimEval(dimAdd(a, b), env) === dimEval(a, env) + dimEval(b, env));
        assert.ok(dimEval(dimSub(a, b), env) === dimEval(a, env) - dimEval(b, env));
        assert.ok(dimEval(dimMul(a, k)!, env) === k * dimEval(a, env));
      }),
    );
  });

  test("dimEval needs every symbol bound", () => {
    assert.throws(() => dimEval(dimAdd(sym("T"), 1), { B: 2 }), /no value for dimension symbol T/);
    assert.equal(dimEval(5, {}), 5);
    assert.deepEqual(shapeEval([sym("B"), dimAdd(sym("T"), 49), 4], { B: 2, T: 3 }), [2, 52, 4]);
  });

  test("printed forms", () => {
    const [b, t] = [sym("B"), sym("T")];
    assert.equal(dimStr(dimAdd(t, 49)), "T + 49");
    assert.equal(dimStr(dimSub(3, t)), "-T + 3");
    assert.equal(dimStr(dimSub(dimSub(dimMul(b, 2)!, t), 1)), "2*B - T - 1");
    assert.equal(dimStr(dimMul(t, -3)!), "-3*T");
    assert.equal(shapeStr([b, 4, dimAdd(t, 1)]), "[B, 4, T + 1]");
    assert.equal(shapeStr([]), "[]");
  });

  test("shapeEq and symbolsOf", () => {
    const [b, t] = [sym("B"), sym("T")];
    assert.ok(shapeEq([b, dimAdd(t, 1)], [sym("B"), dimAdd(1, sym("T"))]));
    assert.ok(!shapeEq([b, t], [t, b]));
    assert.ok(!shapeEq([b], [b, 1]));
    assert.deepEqual(symbolsOf([b, 3, dimAdd(t, b)]).sort(), ["B", "T"]);
    assert.deepEqual(symbolsOf([1, 2]), []);
  });
});

describe("numelKey", () => {
  test("invariant under permutation of the shape", () => {
    fc.assert(
      fc.property(
        fc
          .array(sizeDimArb, { minLength: 0, maxLength: 6 })
          .chain((s) => fc.tuple(fc.constant(s), fc.shuffledSubarray(s, { minLength: s.length, maxLength: s.length }))),
        ([s, p]) => {
          assert.equal(numelKey(p), numelKey(s), `${shapeStr(s)} vs ${shapeStr(p)}`);
        },
      ),
    );
  });

  test("agrees with the element count for constant shapes", () => {
    const shape = fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 5 });
    fc.assert(
      fc.property(shape, shape, (a, b) => {
        const n = (s: number[]) => s.reduce((x, y) => x * y, 1);
        assert.equal(numelKey(a) === numelKey(b), n(a) === n(b));
      }),
    );
  });

  test("keys agree whenever element counts agree for every binding (sampled)", () => {
    // [B, N, h, dh] vs [B, N, h*dh], and integer factors moved in and out of symbolic dims
    const [b, n, t] = [sym("B"), sym("N"), sym("T")];
    const same: [Shape, Shape][] = [
      [
        [b, n, 4, 8],
        [b, n, 32],
      ],
      [
        [b, 2, n, 3],
        [n, 6, b],
      ],
      [[t, 2], [dimMul(t, 2)!]],
      [
        [b, dimAdd(t, 3), 4],
        [b, dimMul(dimAdd(t, 3), 4)!],
      ],
      [[2, dimAdd(t, 2)], [dimAdd(dimMul(t, 2)!, 4)]],
      [[0, t], [0]],
    ];
    for (const [x, y] of same) assert.equal(numelKey(x), numelKey(y), `${shapeStr(x)} vs ${shapeStr(y)}`);
    const differ: [Shape, Shape][] = [
      [[t], [dimAdd(t, 1)]],
      [
        [b, t],
        [b, b],
      ],
      [
        [t, 2],
        [t, 3],
      ],
      [[dimAdd(t, 1), 2], [dimAdd(t, 2)]],
    ];
    for (const [x, y] of differ) assert.notEqual(numelKey(x), numelKey(y), `${shapeStr(x)} vs ${shapeStr(y)}`);
  });

  test("equal keys mean equal element counts under every binding", () => {
    fc.assert(
      fc.property(
        fc.array(sizeDimArb, { maxLength: 4 }),
        fc.array(sizeDimArb, { maxLength: 4 }),
        fc.record({ B: fc.nat(9), N: fc.nat(9), T: fc.nat(9) }),
        (x, y, env) => {
          if (numelKey(x) !== numelKey(y)) return;
          const count = (s: Shape) => shapeEval(s, env).reduce((p, q) => p * q, 1);
          assert.equal(count(x), count(y), `${shapeStr(x)} vs ${shapeStr(y)} at ${JSON.stringify(env)}`);
        },
      ),
    );
  });
});
