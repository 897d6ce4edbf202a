/**
 * Index math as an expression IR (kernels/index-expr.ts): splitting a linear index into a
 * shape's digits and joining them again folds back to the index itself; reshapes compute
 * the right digits; and the vec4 lane analysis is sound: what it calls "same" is equal for
 * the 4 elements of a vector, what it calls "lane" is first + 0..3.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { delinear, evaluate, type Ix, IxShift, IxSum, IxVar, laneOf, linear } from "../kernels/index-expr.ts";
import { fcRuns } from "./fc-runs.ts";

const shapeArb = fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 });
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** row-major digits of `v` in `shape` */
const digitsOf = (v: number, shape: readonly number[]) => {
  const out = new Array<number>(shape.length);
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = v % shape[i];
    v = Math.floor(v / shape[i]);
  }
  return out;
};

test("delinear then linear folds back to the index itself, and every digit is right", () => {
  fc.assert(
    fc.property(shapeArb, fc.nat(), (shape, seed) => {
      const lin = new IxVar("lin");
      const idx = delinear(lin, shape);
      // (an outermost axis of 1 leaves a modulo on the next: still right, for lin < numel)
      if (shape[0] > 1) assert.equal(linear(idx, shape).text, "lin");
      const v = seed % numel(shape);
      assert.deepEqual(
        idx.map((e) => evaluate(e, { lin: v })),
        digitsOf(v, shape),
      );
      assert.equal(evaluate(linear(idx, shape), { lin: v }), v);
    }),
    fcRuns(300),
  );
});

test("a reshape (linear in one shape, digits of another) computes the other shape's digits", () => {
  fc.assert(
    fc.property(shapeArb, fc.nat(), fc.nat(), (shape, cut, seed) => {
      // another shape of the same size: the same dims regrouped
      const k = 1 + (cut % shape.length);
      const other = [numel(shape.slice(0, k)), ...shape.slice(k)];
      const via = delinear(linear(delinear("lin", shape), shape), other);
      const v = seed % numel(shape);
      assert.deepEqual(
        via.map((e) => evaluate(e, { lin: v })),
        digitsOf(v, other),
      );
    }),
    fcRuns(300),
  );
});

/** Index trees a kernel builds from its first element's index `lin`: digits, slices' shifts, offsets of views. */
const indexArb: fc.Arbitrary<Ix> = fc.letrec<{ ix: Ix }>((tie) => ({
  ix: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(new IxVar("lin") as Ix),
    fc.constant(new IxVar("other") as Ix),
    fc
      .tuple(tie("ix"), fc.array(fc.constantFrom(1, 2, 3, 4, 8, 12), { minLength: 1, maxLength: 3 }), fc.nat())
      .map(([x, shape, i]) => delinear(x, shape)[i % shape.length]),
    fc.tuple(tie("ix"), fc.integer({ min: 0, max: 9 })).map(([x, by]) => new IxShift(x, by) as Ix),
    fc
      .array(fc.tuple(tie("ix"), fc.constantFrom(1, 2, 4, 8, 12)), { minLength: 2, maxLength: 3 })
      .map((ts) => new IxSum(ts.map(([x, scale]) => ({ x, scale }))) as Ix),
  ),
})).ix;

test("the lane analysis is sound: 'same' is one value for the 4 elements, 'lane' is first + 0..3", () => {
  fc.assert(
    fc.property(indexArb, fc.nat({ max: 1000 }), fc.nat({ max: 50 }), (e, m, other) => {
      const verdict = laneOf(e, "lin");
      const values = [0, 1, 2, 3].map((l) => evaluate(e, { lin: 4 * m + l, other }));
      if (verdict === "same")
        assert.deepEqual(
          values,
          values.map(() => values[0]),
          `${e.text} called same`,
        );
      if (verdict === "lane")
        assert.deepEqual(
          values,
          [0, 1, 2, 3].map((l) => values[0] + l),
          `${e.text} called lane`,
        );
    }),
    fcRuns(300),
  );
});
