/** A dense float64 host tensor, row-major. Int tensors hold whole numbers. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

/** `data` is taken as is when it is a Float64Array, copied from any other array (typed arrays included). */
export function tensor(shape: readonly number[], data?: Float64Array | ArrayLike<number>): Tensor {
  const n = numel(shape);
  const d = data instanceof Float64Array ? data : data === undefined ? new Float64Array(n) : Float64Array.from(data);
  if (d.length !== n) throw new Error(`tensor data has ${d.length} elements, shape [${shape.join(", ")}] needs ${n}`);
  return { shape: [...shape], data: d };
}
