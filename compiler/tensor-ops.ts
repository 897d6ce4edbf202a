import { type Dim, type Shape, dimEq, dimStr, shapeEq, shapeStr } from "./dims.ts";
import type { GraphBuilder } from "./graph.ts";
import type { DType, Node, Op, OpAttrs } from "./ir.ts";
import { ShapeError } from "./shape-rules.ts";

/** WebGPU guarantees 8 storage buffers per shader stage: a concat kernel binds its output and up to 7 inputs. */
const CONCAT_FANIN = 7;

type UnaryOp = "neg" | "recip" | "exp" | "log" | "sqrt" | "sin" | "cos" | "tanh" | "erf";

/**
 * Tensor operations with numpy semantics (negative axes, broadcasting, keepdim),
 * lowered to the primitive ops. Shape problems surface as ShapeError.
 */
/** The permutation of rank r that swaps the last two axes (`x^T`). */
export function swapLast(r: number): number[] {
  return [...Array(r - 2).keys(), r - 1, r - 2];
}

export class TensorOps {
  constructor(private readonly g: GraphBuilder) {}

  make<O extends Op>(op: O, src: readonly Node[], attrs: OpAttrs[O]): Node {
    return this.g.make(op, src, attrs);
  }

  axis(a: number, rank: number, what = "axis"): number {
    const ax = a < 0 ? a + rank : a;
    if (!Number.isInteger(ax) || ax < 0 || ax >= rank) throw new ShapeError(`${what} ${a} is out of range for a tensor of rank ${rank}`);
    return ax;
  }

  scalar(v: number): Node {
    return this.make("const", [], { value: v });
  }
  size(d: Dim): Node {
    return typeof d === "number" ? this.scalar(d) : this.make("size", [], { dim: d });
  }

  reshape(x: Node, shape: Shape): Node {
    return shapeEq(x.shape, shape) ? x : this.make("reshape", [x], { shape });
  }

  permute(x: Node, perm: readonly number[]): Node {
    const p = perm.map((a) => this.axis(a, x.shape.length));
    return p.every((a, i) => a === i) && p.length === x.shape.length ? x : this.make("permute", [x], { perm: p });
  }

  /** numpy broadcast_to: left-pads the rank with 1s, then expands size-1 dims. */
  expand(x: Node, shape: Shape): Node {
    if (x.shape.length > shape.length) throw new ShapeError(`cannot broadcast ${shapeStr(x.shape)} to lower rank ${shapeStr(shape)}`);
    const padded = this.reshape(x, [...Array(shape.length - x.shape.length).fill(1), ...x.shape]);
    return shapeEq(padded.shape, shape) ? padded : this.make("expand", [padded], { shape });
  }

  broadcastShape(a: Shape, b: Shape): Shape {
    const r = Math.max(a.length, b.length);
    const out: Dim[] = [];
    for (let i = 0; i < r; i++) {
      const x = a[a.length - r + i] ?? 1;
      const y = b[b.length - r + i] ?? 1;
      if (dimEq(x, y) || y === 1) out.push(x);
      else if (x === 1) out.push(y);
      else throw new ShapeError(`shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast (${dimStr(x)} vs ${dimStr(y)})`);
    }
    return out;
  }

  private bcast(...xs: Node[]): Node[] {
    const shape = xs.map((x) => x.shape).reduce((a, b) => this.broadcastShape(a, b));
    return xs.map((x) => this.expand(x, shape));
  }

  unary(op: UnaryOp, x: Node): Node {
    return this.make(op, [this.float(x)], {});
  }

  binary(op: "add" | "mul" | "max" | "cmplt" | "cmpeq", a: Node, b: Node): Node {
    if (a.dtype !== b.dtype) [a, b] = [this.float(a), this.float(b)];
    const [x, y] = this.bcast(a, b);
    return this.make(op, [x, y], {});
  }

  add = (a: Node, b: Node) => this.binary("add", a, b);
  mul = (a: Node, b: Node) => this.binary("mul", a, b);
  sub = (a: Node, b: Node) => this.add(a, this.unary("neg", b));
  div = (a: Node, b: Node) => this.mul(a, this.unary("recip", b));
  /** 1 - x, for 0/1 masks */
  not = (x: Node) => this.add(this.scalar(1), this.unary("neg", x));

  where(c: Node, a: Node, b: Node): Node {
    if (a.dtype !== b.dtype) [a, b] = [this.float(a), this.float(b)];
    const [cc, x, y] = this.bcast(this.float(c), a, b);
    return this.make("where", [cc, x, y], {});
  }

  float(x: Node): Node {
    return x.dtype === "f32" ? x : this.make("cast", [x], { dtype: "f32" });
  }
  cast(x: Node, dtype: DType): Node {
    return x.dtype === dtype ? x : this.make("cast", [x], { dtype });
  }

  private reduce(op: "sum" | "rmax", x: Node, axis: number, keepdim: boolean): Node {
    const ax = this.axis(axis, x.shape.length);
    const r = this.make(op, [x], { axis: ax });
    return keepdim
      ? r
      : this.reshape(
          r,
          x.shape.filter((_, i) => i !== ax),
        );
  }
  sum = (x: Node, axis: number, keepdim = false) => this.reduce("sum", x, axis, keepdim);
  max = (x: Node, axis: number, keepdim = false) => this.reduce("rmax", x, axis, keepdim);
  mean(x: Node, axis: number, keepdim = false): Node {
    const ax = this.axis(axis, x.shape.length);
    return this.div(this.sum(x, ax, keepdim), this.size(x.shape[ax]));
  }

  softmax(x: Node, axis: number): Node {
    const shift = this.make("rmax", [x], { axis: this.axis(axis, x.shape.length), detached: true });
    const e = this.unary("exp", this.sub(x, shift));
    return this.div(e, this.sum(e, axis, true));
  }

  unsqueeze(x: Node, axis: number): Node {
    const ax = this.axis(axis, x.shape.length + 1);
    return this.reshape(x, [...x.shape.slice(0, ax), 1, ...x.shape.slice(ax)]);
  }
  squeeze(x: Node, axis: number): Node {
    const ax = this.axis(axis, x.shape.length);
    if (x.shape[ax] !== 1) throw new ShapeError(`cannot squeeze axis ${axis} of ${shapeStr(x.shape)}: its size is ${dimStr(x.shape[ax])}, not 1`);
    return this.reshape(
      x,
      x.shape.filter((_, i) => i !== ax),
    );
  }

  transposeLast(x: Node): Node {
    const r = x.shape.length;
    if (r < 2) throw new ShapeError(`^T needs a tensor of rank ≥ 2, got ${shapeStr(x.shape)}`);
    return this.permute(x, swapLast(r));
  }

  /** numpy matmul for rank ≥ 2 operands: batch dims broadcast, ranks are aligned first. */
  matmul(a: Node, b: Node): Node {
    if (a.shape.length < 2 || b.shape.length < 2) throw new ShapeError(`@ needs operands of rank ≥ 2, got ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`);
    const ka = a.shape[a.shape.length - 1];
    const kb = b.shape[b.shape.length - 2];
    if (!dimEq(ka, kb)) throw new ShapeError(`inner dimensions of ${shapeStr(a.shape)} @ ${shapeStr(b.shape)} differ: ${dimStr(ka)} vs ${dimStr(kb)}`);
    const r = Math.max(a.shape.length, b.shape.length);
    const lift = (x: Node) => this.reshape(x, [...Array(r - x.shape.length).fill(1), ...x.shape]);
    const [x, y] = [lift(a), lift(b)];
    this.broadcastShape(x.shape.slice(0, r - 2), y.shape.slice(0, r - 2));
    return this.make("matmul", [this.float(x), this.float(y)], {});
  }

  slice(x: Node, axis: number, start: Dim, end: Dim): Node {
    const ax = this.axis(axis, x.shape.length);
    if (dimEq(start, 0) && dimEq(end, x.shape[ax])) return x;
    return this.make("slice", [x], { start: x.shape.map((_, i) => (i === ax ? start : 0)), end: x.shape.map((d, i) => (i === ax ? end : d)) });
  }

  pad(x: Node, axis: number, before: Dim, after: Dim): Node {
    const ax = this.axis(axis, x.shape.length);
    for (const [w, what] of [
      [before, "before"],
      [after, "after"],
    ] as const)
      if (typeof w === "number" && (w < 0 || !Number.isInteger(w)))
        throw new ShapeError(`pad width ${what} must be a non-negative integer, got ${w} (padding dim ${dimStr(x.shape[ax])} of ${shapeStr(x.shape)})`);
    if (dimEq(before, 0) && dimEq(after, 0)) return x;
    return this.make("pad", [x], { before: x.shape.map((_, i) => (i === ax ? before : 0)), after: x.shape.map((_, i) => (i === ax ? after : 0)) });
  }

  concat(xs: readonly Node[], axis: number): Node {
    if (xs.length === 0) throw new ShapeError(`concat of nothing`);
    if (xs.length === 1) return xs[0];
    // Wide concats nest (CONCAT_FANIN at a time) so a kernel never needs more buffers than
    // any device binds: stacking 24 ViT layers' features must still schedule.
    if (xs.length > CONCAT_FANIN) {
      const groups: Node[] = [];
      for (let i = 0; i < xs.length; i += CONCAT_FANIN) groups.push(this.concat(xs.slice(i, i + CONCAT_FANIN), axis));
      return this.concat(groups, axis);
    }
    const ax = this.axis(axis, xs[0].shape.length);
    const dt: DType = xs.every((x) => x.dtype === "i32") ? "i32" : "f32";
    return this.make(
      "concat",
      xs.map((x) => this.cast(x, dt)),
      { axis: ax },
    );
  }

  stack(xs: readonly Node[], axis = 0): Node {
    return this.concat(
      xs.map((x) => this.unsqueeze(x, axis < 0 ? axis : axis)),
      axis,
    );
  }

  gather(table: Node, idx: Node): Node {
    return this.make("gather", [table, idx], {});
  }

  arange(n: Dim): Node {
    return this.make("arange", [], { n });
  }
}
