import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { dimAdd, sym } from "../compiler/dims.ts";
import { GraphBuilder, topoOrder } from "../compiler/graph.ts";
import { evalRules, interpret } from "../compiler/interpret.ts";
import { type Node, OPS } from "../compiler/ir.ts";
import { ShapeError, shapeRules } from "../compiler/shape-rules.ts";
import { tensor } from "../compiler/tensor.ts";

const span = { file: "t.dehvf", start: 0, end: 1 };

describe("op tables", () => {
  test("every op has exactly one shape rule and one eval rule", () => {
    assert.deepEqual(Object.keys(shapeRules).sort(), [...OPS].sort());
    assert.deepEqual(Object.keys(evalRules).sort(), [...OPS].sort());
    assert.equal(new Set(OPS).size, OPS.length);
  });
});

describe("hash-consing", () => {
  test("same op, sources and attrs give the same node object", () => {
    const g = new GraphBuilder();
    const x = g.make("input", [], { name: "x", shape: [sym("B"), dimAdd(sym("T"), 3)], dtype: "f32" });
    // a separately built but equal symbolic shape still hits
    const x2 = g.make("input", [], { name: "x", shape: [sym("B"), dimAdd(3, sym("T"))], dtype: "f32" });
    assert.equal(x2, x);
    const e1 = g.make("exp", [x], {});
    const e2 = g.make("exp", [x], {});
    assert.equal(e1, e2);
    const s1 = g.make("slice", [x], { start: [0, 1], end: [sym("B"), dimAdd(sym("T"), 2)] });
    const s2 = g.make("slice", [x], { start: [0, 1], end: [sym("B"), dimAdd(sym("T"), 2)] });
    assert.equal(s1, s2);
    const p1 = g.make("param", [], { name: "w", shape: [3, 4], init: { kind: "normal", std: 0.02, mean: 0 }, trainable: true });
    const p2 = g.make("param", [], { name: "w", shape: [3, 4], init: { kind: "normal", std: 0.02, mean: 0 }, trainable: true });
    assert.equal(p1, p2);
    assert.equal(g.size, 4);
  });

  test("different attrs, sources or ops give different nodes", () => {
    const g = new GraphBuilder();
    const a = g.make("input", [], { name: "a", shape: [2, 3], dtype: "f32" });
    const b = g.make("input", [], { name: "b", shape: [2, 3], dtype: "f32" });
    assert.notEqual(a, b);
    assert.notEqual(g.make("input", [], { name: "a", shape: [2, 3], dtype: "i32" }), a);
    assert.notEqual(g.make("add", [a, b], {}), g.make("add", [b, a], {}));
    assert.notEqual(g.make("add", [a, b], {}), g.make("mul", [a, b], {}));
    assert.notEqual(g.make("sum", [a], { axis: 0 }), g.make("sum", [a], { axis: 1 }));
    assert.notEqual(g.make("permute", [a], { perm: [1, 0] }), g.make("reshape", [a], { shape: [3, 2] }));
    assert.notEqual(g.make("reshape", [a], { shape: [3, 2] }), g.make("reshape", [a], { shape: [6, 1] }));
    assert.notEqual(g.make("arange", [], { n: sym("T") }), g.make("arange", [], { n: dimAdd(sym("T"), 1) }));
    assert.notEqual(g.make("size", [], { dim: sym("T") }), g.make("size", [], { dim: sym("B") }));
    const p = (std: number) => g.make("param", [], { name: "w", shape: [3], init: { kind: "normal", std, mean: 0 }, trainable: true });
    assert.notEqual(p(0.02), p(0.01));
  });

  test("constants that JSON cannot tell apart stay distinct", () => {
    const g = new GraphBuilder();
    const values = [0, -0, 1, Infinity, -Infinity, NaN, 1e-300, -1e300];
    const nodes = values.map((value) => g.make("const", [], { value }));
    assert.equal(new Set(nodes).size, values.length);
    // and each still evaluates to its own value
    const out = interpret(nodes, { dims: {}, inputs: new Map(), params: new Map() });
    out.forEach((t, i) => assert.ok(Object.is(t.data[0], values[i]), `const ${values[i]} evaluated to ${t.data[0]}`));
    // equal non-finite constants still share
    assert.equal(g.make("const", [], { value: -Infinity }), nodes[4]);
    assert.equal(g.make("const", [], { value: NaN }), nodes[5]);
  });

  test("random expressions built twice are the same nodes", () => {
    const expr = fc.letrec<{ e: unknown }>((tie) => ({
      e: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.integer({ min: 0, max: 3 }).map((v) => ({ c: v })),
        fc.tuple(fc.constantFrom("add", "mul", "max"), tie("e"), tie("e")),
        fc.tuple(fc.constantFrom("neg", "exp"), tie("e")),
      ),
    })).e;
    type E = { c: number } | ["add" | "mul" | "max", E, E] | ["neg" | "exp", E];
    fc.assert(
      fc.property(expr, (raw) => {
        const e = raw as E;
        const g = new GraphBuilder();
        const build = (x: E): Node =>
          "c" in x ? g.make("const", [], { value: x.c }) : x.length === 3 ? g.make(x[0], [build(x[1]), build(x[2])], {}) : g.make(x[0], [build(x[1])], {});
        const first = build(e);
        const n = g.size;
        assert.equal(build(e), first);
        assert.equal(g.size, n, "rebuilding made new nodes");
        // every node's key is unique in the builder
        const order = topoOrder([first]);
        assert.equal(new Set(order.map((m) => m.key)).size, order.length);
      }),
    );
  });

  test("provenance records the span a node was first built under", () => {
    const g = new GraphBuilder();
    const x = g.make("const", [], { value: 1 });
    g.currentSpan = span;
    const y = g.make("neg", [x], {});
    g.currentSpan = { ...span, start: 5 };
    assert.equal(g.make("neg", [x], {}), y);
    assert.equal(g.provenance.get(x.id), undefined);
    assert.equal(g.provenance.get(y.id), span);
  });

  test("shape rule violations are ShapeErrors at build time", () => {
    const g = new GraphBuilder();
    const a = g.make("input", [], { name: "a", shape: [2, 3], dtype: "f32" });
    const b = g.make("input", [], { name: "b", shape: [3, 2], dtype: "f32" });
    const i = g.make("input", [], { name: "i", shape: [4], dtype: "i32" });
    const bad: [string, () => unknown][] = [
      ["add shapes", () => g.make("add", [a, b], {})],
      ["add dtypes", () => g.make("add", [i, g.make("input", [], { name: "f", shape: [4], dtype: "f32" })], {})],
      ["exp of int", () => g.make("exp", [i], {})],
      ["reshape count", () => g.make("reshape", [a], { shape: [5] })],
      ["reshape negative", () => g.make("reshape", [a], { shape: [-2, -3] })],
      ["permute", () => g.make("permute", [a], { perm: [0, 0] })],
      ["expand", () => g.make("expand", [a], { shape: [4, 3] })],
      ["sum axis", () => g.make("sum", [a], { axis: 2 })],
      ["concat dims", () => g.make("concat", [a, b], { axis: 0 })],
      ["matmul inner", () => g.make("matmul", [a, a], {})],
      ["gather float index", () => g.make("gather", [a, a], {})],
      ["slice reversed", () => g.make("slice", [a], { start: [1, 0], end: [0, 3] })],
      ["slice past the end", () => g.make("slice", [a], { start: [0, 0], end: [2, 4] })],
      ["slice before the start", () => g.make("slice", [a], { start: [-1, 0], end: [1, 3] })],
      [
        "symbolic slice past the end",
        () => g.make("slice", [g.make("input", [], { name: "s", shape: [sym("T")], dtype: "f32" })], { start: [0], end: [dimAdd(sym("T"), 1)] }),
      ],
    ];
    for (const [what, f] of bad) assert.throws(f, ShapeError, what);
    // in-range symbolic slices are fine
    const s = g.make("input", [], { name: "s", shape: [dimAdd(sym("T"), 3)], dtype: "f32" });
    assert.deepEqual(g.make("slice", [s], { start: [3], end: [dimAdd(sym("T"), 3)] }).shape, [sym("T")]);
  });
});

describe("topoOrder", () => {
  /** a random DAG of scalar nodes: each node uses 1-3 earlier ones */
  const dagArb = fc
    .integer({ min: 1, max: 40 })
    .chain((n) =>
      fc.tuple(
        fc.array(fc.tuple(fc.constantFrom("neg", "add", "where"), fc.nat(), fc.nat(), fc.nat()), { minLength: n, maxLength: n }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
      ),
    );

  test("sources come before users; each reachable node appears exactly once", () => {
    fc.assert(
      fc.property(dagArb, ([spec, rootPicks]) => {
        const g = new GraphBuilder();
        const nodes: Node[] = [g.make("const", [], { value: 1 }), g.make("const", [], { value: 2 })];
        for (const [op, i, j, k] of spec) {
          const pick = (r: number) => nodes[r % nodes.length];
          nodes.push(
            op === "neg"
              ? g.make("neg", [pick(i)], {})
              : op === "add"
                ? g.make("add", [pick(i), pick(j)], {})
                : g.make("where", [pick(i), pick(j), pick(k)], {}),
          );
        }
        const roots = rootPicks.map((r) => nodes[r % nodes.length]);
        const order = topoOrder(roots);

        const pos = new Map(order.map((m, i) => [m.id, i]));
        assert.equal(pos.size, order.length, "a node appears twice");
        for (const m of order) for (const s of m.src) assert.ok(pos.get(s.id)! < pos.get(m.id)!, `node ${s.id} is not before its user ${m.id}`);

        // exactly the reachable set (naive recursive walk; these graphs are shallow)
        const reach = new Set<number>();
        const walk = (m: Node) => {
          if (reach.has(m.id)) return;
          reach.add(m.id);
          m.src.forEach(walk);
        };
        roots.forEach(walk);
        assert.deepEqual(
          [...pos.keys()].sort((a, b) => a - b),
          [...reach].sort((a, b) => a - b),
        );
        // the first root's subgraph is emitted first
        const firstReach = topoOrder([roots[0]]);
        assert.deepEqual(order.slice(0, firstReach.length), firstReach);
      }),
    );
  });

  test("deep chains do not overflow the stack", () => {
    const g = new GraphBuilder();
    const x = g.make("input", [], { name: "x", shape: [3], dtype: "f32" });
    let y: Node = x;
    const depth = 20_000;
    // alternate unary and binary steps; the binary one also reaches back to x (a long ladder of diamonds)
    for (let i = 0; i < depth; i++) y = i % 2 === 0 ? g.make("neg", [y], {}) : g.make("add", [y, x], {});
    const order = topoOrder([y]);
    assert.equal(order.length, depth + 1);
    assert.equal(order[0], x);
    assert.equal(order[order.length - 1], y);
    // the interpreter walks the same depth
    const [out] = interpret([y], { dims: {}, inputs: new Map([["x", tensor([3], [1, 2, 3])]]), params: new Map() });
    // a pair (neg, +x) maps v -> x - v: from x it alternates 0, x, 0, ...; 10k pairs end on x
    assert.deepEqual([...out.data], [1, 2, 3]);
  });

  test("a wide fan-in with shared subgraphs is ordered once", () => {
    const g = new GraphBuilder();
    const leaves = Array.from({ length: 2000 }, (_, i) => g.make("const", [], { value: i }));
    let acc: Node = leaves[0];
    for (const l of leaves.slice(1)) acc = g.make("add", [acc, l], {});
    const order = topoOrder([acc, acc, leaves[7]]);
    assert.equal(order.length, 2000 + 1999);
    const [out] = interpret([acc], { dims: {}, inputs: new Map(), params: new Map() });
    assert.equal(out.data[0], (1999 * 2000) / 2);
  });
});
