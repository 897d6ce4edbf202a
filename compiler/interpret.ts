import { dimEval, shapeEval } from "./dims.ts";
import { erf } from "./erf.ts";
import { hashUniform, saltMix } from "./hash.ts";
import { topoOrder } from "./graph.ts";
import type { Node, Op, OpAttrs } from "./ir.ts";
import { numel, stridesOf, type Tensor, tensor } from "./tensor.ts";

/** What a graph is evaluated against: run-time dims, inputs and parameter values. */
export interface EvalEnv {
  readonly dims: Readonly<Record<string, number>>;
  readonly inputs: ReadonlyMap<string, Tensor>;
  readonly params: ReadonlyMap<string, Tensor>;
}

type Eval<O extends Op> = (n: Node<O>, src: readonly Tensor[], env: EvalEnv) => Tensor;

function map1(f: (x: number) => number): Eval<Op> {
  return (_n, [a]) => {
    const out = new Float64Array(a.data.length);
    for (let i = 0; i < out.length; i++) out[i] = f(a.data[i]);
    return { shape: a.shape, data: out };
  };
}

function map2(f: (x: number, y: number) => number): Eval<Op> {
  return (_n, [a, b]) => {
    const out = new Float64Array(a.data.length);
    for (let i = 0; i < out.length; i++) out[i] = f(a.data[i], b.data[i]);
    return { shape: a.shape, data: out };
  };
}

/** Visits every multi-index of `shape` in row-major order with a precomputed offset into a strided source. */
function stridedCopy(shape: readonly number[], srcStrides: readonly number[], srcOffset: number, from: Float64Array): Float64Array {
  const n = numel(shape);
  const out = new Float64Array(n);
  const r = shape.length;
  const idx = new Array<number>(r).fill(0);
  let off = srcOffset;
  for (let i = 0; i < n; i++) {
    out[i] = from[off];
    for (let k = r - 1; k >= 0; k--) {
      idx[k]++;
      off += srcStrides[k];
      if (idx[k] < shape[k]) break;
      off -= srcStrides[k] * shape[k];
      idx[k] = 0;
    }
  }
  return out;
}

function reduceAxis(a: Tensor, axis: number, init: number, f: (acc: number, x: number) => number): Tensor {
  const outer = numel(a.shape.slice(0, axis));
  const len = a.shape[axis];
  const inner = numel(a.shape.slice(axis + 1));
  const out = new Float64Array(outer * inner).fill(init);
  for (let o = 0; o < outer; o++)
    for (let j = 0; j < len; j++) {
      const base = (o * len + j) * inner;
      for (let i = 0; i < inner; i++) out[o * inner + i] = f(out[o * inner + i], a.data[base + i]);
    }
  return { shape: a.shape.map((d, i) => (i === axis ? 1 : d)), data: out };
}

export const evalRules: { [O in Op]: Eval<O> } = {
  input: (n, _s, env) => {
    const t = env.inputs.get(n.attrs.name);
    if (!t) throw new Error(`missing input \`${n.attrs.name}\``);
    const want = shapeEval(n.shape, env.dims);
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new Error(`input \`${n.attrs.name}\` has shape [${t.shape.join(", ")}], expected [${want.join(", ")}]`);
    return t;
  },
  param: (n, _s, env) => {
    const t = env.params.get(n.attrs.name);
    if (!t) throw new Error(`missing parameter \`${n.attrs.name}\``);
    return t;
  },
  const: (n) => tensor([], [n.attrs.value]),
  size: (n, _s, env) => tensor([], [dimEval(n.attrs.dim, env.dims)]),
  arange: (n, _s, env) => {
    const len = dimEval(n.attrs.n, env.dims);
    return tensor(
      [len],
      Float64Array.from({ length: len }, (_, i) => i),
    );
  },
  neg: map1((x) => -x),
  recip: map1((x) => 1 / x),
  exp: map1(Math.exp),
  log: map1(Math.log),
  sqrt: map1(Math.sqrt),
  sin: map1(Math.sin),
  cos: map1(Math.cos),
  tanh: map1(Math.tanh),
  erf: map1(erf),
  cast: (n, [a]) => (n.attrs.dtype === "i32" ? { shape: a.shape, data: a.data.map(Math.trunc) } : a),
  add: map2((x, y) => x + y),
  mul: map2((x, y) => x * y),
  max: map2((x, y) => (x > y || Number.isNaN(x) ? x : y)),
  cmplt: map2((x, y) => (x < y ? 1 : 0)),
  cmpeq: map2((x, y) => (x === y ? 1 : 0)),
  hash: (n, [key, counter]) => {
    const mix = saltMix(n.attrs.salt);
    const out = new Float64Array(key.data.length);
    for (let i = 0; i < out.length; i++) out[i] = hashUniform(key.data[i], counter.data[i], mix);
    return { shape: key.shape, data: out };
  },
  where: (_n, [c, a, b]) => {
    const out = new Float64Array(c.data.length);
    for (let i = 0; i < out.length; i++) out[i] = c.data[i] !== 0 ? a.data[i] : b.data[i];
    return { shape: c.shape, data: out };
  },
  sum: (n, [a]) => reduceAxis(a, n.attrs.axis, 0, (acc, x) => acc + x),
  rmax: (n, [a]) => reduceAxis(a, n.attrs.axis, -Infinity, (acc, x) => (x > acc || Number.isNaN(x) ? x : acc)),
  reshape: (n, [a], env) => ({ shape: shapeEval(n.attrs.shape, env.dims), data: a.data }),
  permute: (n, [a]) => {
    const st = stridesOf(a.shape);
    const shape = n.attrs.perm.map((p) => a.shape[p]);
    return {
      shape,
      data: stridedCopy(
        shape,
        n.attrs.perm.map((p) => st[p]),
        0,
        a.data,
      ),
    };
  },
  expand: (n, [a], env) => {
    const shape = shapeEval(n.attrs.shape, env.dims);
    const st = stridesOf(a.shape).map((s, i) => (a.shape[i] === 1 && shape[i] !== 1 ? 0 : s));
    return { shape, data: stridedCopy(shape, st, 0, a.data) };
  },
  slice: (n, [a], env) => {
    const start = n.attrs.start.map((d) => dimEval(d, env.dims));
    const end = n.attrs.end.map((d) => dimEval(d, env.dims));
    const shape = end.map((e, i) => e - start[i]);
    start.forEach((s, i) => {
      if (s < 0 || end[i] > a.shape[i] || shape[i] < 0) throw new Error(`slice ${s}:${end[i]} out of range for dim ${i} of size ${a.shape[i]}`);
    });
    const st = stridesOf(a.shape);
    return {
      shape,
      data: stridedCopy(
        shape,
        st,
        start.reduce((acc, s, i) => acc + s * st[i], 0),
        a.data,
      ),
    };
  },
  pad: (n, [a], env) => {
    const before = n.attrs.before.map((d) => dimEval(d, env.dims));
    const shape = a.shape.map((d, i) => d + before[i] + dimEval(n.attrs.after[i], env.dims));
    const out = new Float64Array(numel(shape));
    const ost = stridesOf(shape);
    const src = stridedCopy(a.shape, stridesOf(a.shape), 0, a.data);
    const r = a.shape.length;
    const idx = new Array<number>(r).fill(0);
    for (let i = 0; i < src.length; i++) {
      let off = 0;
      for (let k = 0; k < r; k++) off += (idx[k] + before[k]) * ost[k];
      out[off] = src[i];
      for (let k = r - 1; k >= 0; k--) {
        if (++idx[k] < a.shape[k]) break;
        idx[k] = 0;
      }
    }
    return { shape, data: out };
  },
  concat: (n, srcs) => {
    const axis = n.attrs.axis;
    const outer = numel(srcs[0].shape.slice(0, axis));
    const inner = numel(srcs[0].shape.slice(axis + 1));
    const total = srcs.reduce((acc, s) => acc + s.shape[axis], 0);
    const out = new Float64Array(outer * total * inner);
    let at = 0;
    for (const s of srcs) {
      const w = s.shape[axis] * inner;
      for (let o = 0; o < outer; o++) out.set(s.data.subarray(o * w, (o + 1) * w), o * total * inner + at);
      at += w;
    }
    return { shape: srcs[0].shape.map((d, i) => (i === axis ? total : d)), data: out };
  },
  matmul: (_n, [a, b]) => {
    const r = a.shape.length;
    const [m, k, nn] = [a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]];
    // broadcast as the shape rule does: a size-1 side takes the other's size, even 0
    const batch = a.shape.slice(0, r - 2).map((d, i) => (d === 1 ? b.shape[i] : d));
    const nb = numel(batch);
    const out = new Float64Array(nb * m * nn);
    const bst = stridesOf(batch);
    const ast = stridesOf(a.shape.slice(0, r - 2));
    const bbst = stridesOf(b.shape.slice(0, r - 2));
    for (let bi = 0; bi < nb; bi++) {
      let aoff = 0;
      let boff = 0;
      for (let d = 0; d < batch.length; d++) {
        const id = Math.floor(bi / bst[d]) % batch[d];
        if (a.shape[d] !== 1) aoff += id * ast[d];
        if (b.shape[d] !== 1) boff += id * bbst[d];
      }
      aoff *= m * k;
      boff *= k * nn;
      const ooff = bi * m * nn;
      for (let i = 0; i < m; i++)
        for (let p = 0; p < k; p++) {
          const av = a.data[aoff + i * k + p];
          const brow = boff + p * nn;
          const orow = ooff + i * nn;
          for (let j = 0; j < nn; j++) out[orow + j] += av * b.data[brow + j];
        }
    }
    return { shape: [...batch, m, nn], data: out };
  },
  gather: (_n, [table, idx]) => {
    const rows = table.shape[0];
    const w = numel(table.shape.slice(1));
    const out = new Float64Array(idx.data.length * w);
    for (let i = 0; i < idx.data.length; i++) {
      const r = idx.data[i];
      if (!Number.isInteger(r) || r < 0 || r >= rows) throw new Error(`gather index ${r} out of range [0, ${rows})`);
      out.set(table.data.subarray(r * w, (r + 1) * w), i * w);
    }
    return { shape: [...idx.shape, ...table.shape.slice(1)], data: out };
  },
  write_slot: (n, [old, x, pos]) => {
    const axis = n.attrs.axis;
    const len = old.shape[axis];
    // per batch row: `outer` blocks of `len` slots of `inner` values; x has one slot per block
    const outer = numel(old.shape.slice(1, axis));
    const inner = numel(old.shape.slice(axis + 1));
    const out = Float64Array.from(old.data);
    for (let b = 0; b < old.shape[0]; b++) {
      const p = pos.data[b];
      if (!Number.isInteger(p) || p < 0 || p >= len) throw new Error(`write_slot position ${p} out of range [0, ${len})`);
      for (let o = 0; o < outer; o++) {
        const row = b * outer + o;
        out.set(x.data.subarray(row * inner, (row + 1) * inner), (row * len + p) * inner);
      }
    }
    return { shape: old.shape, data: out };
  },
  barrier: (_n, [x]) => x,
};

/** Evaluates the roots in float64; intermediates are dropped once their last user ran. */
export function interpret(roots: readonly Node[], env: EvalEnv): Tensor[] {
  const order = topoOrder(roots);
  const uses = new Map<number, number>();
  for (const n of order) for (const s of n.src) uses.set(s.id, (uses.get(s.id) ?? 0) + 1);
  for (const r of roots) uses.set(r.id, (uses.get(r.id) ?? 0) + 1);
  const values = new Map<number, Tensor>();
  for (const n of order) {
    const src = n.src.map((s) => values.get(s.id)!);
    const rule = evalRules[n.op] as Eval<Op>;
    values.set(n.id, rule(n, src, env));
    for (const s of n.src) {
      const left = uses.get(s.id)! - 1;
      uses.set(s.id, left);
      if (left === 0) values.delete(s.id);
    }
  }
  return roots.map((r) => values.get(r.id)!);
}

export type { OpAttrs };
