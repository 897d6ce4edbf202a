import { type Dim, type Shape, dimAdd, dimEq, dimStr, dimSub, numelKey, shapeEq, shapeStr } from "./dims.ts";
import type { DType, Node, Op, OpAttrs } from "./ir.ts";

/** A shape/dtype rule violation; the elaborator attaches the DSL span. */
export class ShapeError extends Error {}

export interface TypeOf {
  readonly shape: Shape;
  readonly dtype: DType;
}

type Rule<O extends Op> = (src: readonly Node[], attrs: OpAttrs[O]) => TypeOf;

function check(cond: boolean, msg: () => string): asserts cond {
  if (!cond) throw new ShapeError(msg());
}

const unary: Rule<Op> = (src) => {
  check(src[0].dtype === "f32", () => `expects a float tensor, got ${src[0].dtype}`);
  return { shape: src[0].shape, dtype: "f32" };
};

function sameShapes(src: readonly Node[]): void {
  for (const s of src.slice(1)) check(shapeEq(s.shape, src[0].shape), () => `operand shapes differ: ${shapeStr(src[0].shape)} vs ${shapeStr(s.shape)}`);
}

const binary: Rule<Op> = (src) => {
  sameShapes(src);
  check(src[0].dtype === src[1].dtype, () => `operand dtypes differ: ${src[0].dtype} vs ${src[1].dtype}`);
  return { shape: src[0].shape, dtype: src[0].dtype };
};

const compare: Rule<Op> = (src) => ({ shape: binary(src, {}).shape, dtype: "f32" });

function axisOk(axis: number, rank: number): void {
  check(Number.isInteger(axis) && axis >= 0 && axis < rank, () => `axis ${axis} out of range for rank ${rank}`);
}

const reduce: Rule<"sum" | "rmax"> = (src, { axis }) => {
  axisOk(axis, src[0].shape.length);
  return { shape: src[0].shape.map((d, i) => (i === axis ? 1 : d)), dtype: src[0].dtype };
};

const positive = (d: Dim) => typeof d !== "number" || (Number.isInteger(d) && d >= 0);

export const shapeRules: { [O in Op]: Rule<O> } = {
  input: (_s, a) => ({ shape: a.shape, dtype: a.dtype }),
  param: (_s, a) => ({ shape: a.shape, dtype: "f32" }),
  const: () => ({ shape: [], dtype: "f32" }),
  size: () => ({ shape: [], dtype: "f32" }),
  arange: (_s, a) => ({ shape: [a.n], dtype: "f32" }),
  neg: unary,
  recip: unary,
  exp: unary,
  log: unary,
  sqrt: unary,
  sin: unary,
  cos: unary,
  tanh: unary,
  erf: unary,
  cast: (src, a) => ({ shape: src[0].shape, dtype: a.dtype }),
  add: binary,
  mul: binary,
  max: binary,
  cmplt: compare,
  cmpeq: compare,
  hash: (src) => {
    sameShapes(src);
    check(src[0].dtype === "i32" && src[1].dtype === "i32", () => `hash needs an int key and int counters, got ${src[0].dtype} and ${src[1].dtype}`);
    return { shape: src[0].shape, dtype: "f32" };
  },
  where: (src) => {
    sameShapes(src);
    check(src[1].dtype === src[2].dtype, () => `where: branch dtypes differ`);
    return { shape: src[0].shape, dtype: src[1].dtype };
  },
  sum: reduce,
  rmax: reduce,
  reshape: (src, { shape }) => {
    check(shape.every(positive), () => `reshape to invalid shape ${shapeStr(shape)}`);
    check(numelKey(src[0].shape) === numelKey(shape), () => `cannot reshape ${shapeStr(src[0].shape)} to ${shapeStr(shape)}: element counts differ`);
    return { shape, dtype: src[0].dtype };
  },
  permute: (src, { perm }) => {
    const r = src[0].shape.length;
    check(
      perm.length === r && [...perm].sort((a, b) => a - b).every((p, i) => p === i),
      () => `permute [${perm.join(", ")}] is not a permutation of rank ${r}`,
    );
    return { shape: perm.map((p) => src[0].shape[p]), dtype: src[0].dtype };
  },
  expand: (src, { shape }) => {
    const from = src[0].shape;
    check(from.length === shape.length, () => `expand ${shapeStr(from)} to ${shapeStr(shape)}: ranks differ`);
    from.forEach((d, i) =>
      check(dimEq(d, shape[i]) || d === 1, () => `cannot broadcast ${shapeStr(from)} to ${shapeStr(shape)} (dim ${i}: ${dimStr(d)} vs ${dimStr(shape[i])})`),
    );
    return { shape, dtype: src[0].dtype };
  },
  slice: (src, { start, end }) => {
    const s = src[0].shape;
    check(start.length === s.length && end.length === s.length, () => `slice bounds do not match rank ${s.length}`);
    const out = s.map((_, i) => dimSub(end[i], start[i]));
    out.forEach((d, i) => check(typeof d !== "number" || d >= 0, () => `empty or reversed slice ${dimStr(start[i])}:${dimStr(end[i])} on dim ${i}`));
    // out-of-range bounds would otherwise only fail when the interpreter runs
    s.forEach((d, i) => {
      const [lo, past] = [start[i], dimSub(end[i], d)];
      check(
        (typeof lo !== "number" || lo >= 0) && (typeof past !== "number" || past <= 0),
        () => `slice ${dimStr(lo)}:${dimStr(end[i])} is out of range for dim ${i} of size ${dimStr(d)}`,
      );
    });
    return { shape: out, dtype: src[0].dtype };
  },
  pad: (src, { before, after }) => {
    const s = src[0].shape;
    check(before.length === s.length && after.length === s.length, () => `pad widths do not match rank ${s.length}`);
    return { shape: s.map((d, i) => dimAdd(dimAdd(d, before[i]), after[i])), dtype: src[0].dtype };
  },
  concat: (src, { axis }) => {
    const r = src[0].shape.length;
    axisOk(axis, r);
    let total: Dim = 0;
    for (const s of src) {
      check(s.shape.length === r, () => `concat: ranks differ (${shapeStr(src[0].shape)} vs ${shapeStr(s.shape)})`);
      s.shape.forEach((d, i) =>
        check(i === axis || dimEq(d, src[0].shape[i]), () => `concat on axis ${axis}: ${shapeStr(src[0].shape)} vs ${shapeStr(s.shape)} differ on dim ${i}`),
      );
      check(s.dtype === src[0].dtype, () => `concat: dtypes differ`);
      total = dimAdd(total, s.shape[axis]);
    }
    return { shape: src[0].shape.map((d, i) => (i === axis ? total : d)), dtype: src[0].dtype };
  },
  matmul: (src) => {
    const [a, b] = src;
    check(a.shape.length >= 2 && b.shape.length === a.shape.length, () => `matmul needs equal ranks ≥ 2, got ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`);
    const r = a.shape.length;
    check(
      dimEq(a.shape[r - 1], b.shape[r - 2]),
      () => `matmul inner dimensions differ: ${shapeStr(a.shape)} @ ${shapeStr(b.shape)} (${dimStr(a.shape[r - 1])} vs ${dimStr(b.shape[r - 2])})`,
    );
    const batch = a.shape.slice(0, r - 2).map((d, i) => {
      const e = b.shape[i];
      check(dimEq(d, e) || d === 1 || e === 1, () => `matmul batch dimensions do not broadcast: ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`);
      return d === 1 ? e : d;
    });
    check(a.dtype === "f32" && b.dtype === "f32", () => `matmul needs float operands`);
    return { shape: [...batch, a.shape[r - 2], b.shape[r - 1]], dtype: "f32" };
  },
  gather: (src) => {
    const [table, idx] = src;
    check(table.shape.length >= 1, () => `gather table must have rank ≥ 1`);
    check(idx.dtype === "i32", () => `gather indices must be int, got ${idx.dtype}`);
    return { shape: [...idx.shape, ...table.shape.slice(1)], dtype: table.dtype };
  },
  write_slot: (src, { axis }) => {
    const [old, x, pos] = src;
    const rank = old.shape.length;
    check(rank >= 2 && axis >= 1, () => `write_slot writes along a non-batch axis of a rank ≥ 2 tensor, got axis ${axis} of ${shapeStr(old.shape)}`);
    axisOk(axis, rank);
    check(
      x.shape.length === rank && x.shape.every((d, i) => (i === axis ? dimEq(d, 1) : dimEq(d, old.shape[i]))),
      () => `write_slot: the written value ${shapeStr(x.shape)} must match ${shapeStr(old.shape)} with size 1 along axis ${axis}`,
    );
    check(x.dtype === old.dtype, () => `write_slot: dtypes differ: ${old.dtype} vs ${x.dtype}`);
    check(
      pos.dtype === "i32" && pos.shape.length === 1 && dimEq(pos.shape[0], old.shape[0]),
      () => `write_slot: positions must be int [${dimStr(old.shape[0])}], got ${pos.dtype}${shapeStr(pos.shape)}`,
    );
    return { shape: old.shape, dtype: old.dtype };
  },
  barrier: ([x]) => ({ shape: x.shape, dtype: x.dtype }),
};
