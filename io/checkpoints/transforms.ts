/**
 * The closed set of ways a checkpoint tensor may differ from the parameter it fills,
 * applied as it is read (float32, one tensor at a time).
 *   rope-interleaved-to-half  Meta/llama2.c q and k rows (RoPE pairs 2i, 2i+1) into the
 *                             rotate_half order dehvf's Rope uses (pairs i, i + hd/2): HF
 *                             row h·hd + j·hd/2 + i = Meta row h·hd + 2i + j; `heads` is the
 *                             number of heads the rows split into (kv heads for k)
 *   transpose                 a 2-D [in, out] matrix stored the other way round
 *   reshape                   the same elements in the same order, another shape (a conv
 *                             weight [D, C, p, p] as the patch matrix [D, C·p·p])
 */
export const TRANSFORMS = ["rope-interleaved-to-half", "transpose", "reshape"] as const;
export type TransformName = (typeof TRANSFORMS)[number];

export type Transform = { readonly kind: "rope-interleaved-to-half"; readonly heads: number } | { readonly kind: "transpose" } | { readonly kind: "reshape" };

export function transformText(t: Transform | undefined): string {
  if (!t) return "";
  return t.kind === "rope-interleaved-to-half" ? `${t.kind}, ${t.heads} heads` : t.kind;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Why a stored tensor of shape `stored` cannot fill a parameter of shape `param` under `t`, or undefined when it can. */
export function shapeProblem(t: Transform | undefined, stored: readonly number[], param: readonly number[]): string | undefined {
  const want = `[${param.join(", ")}]`;
  const have = `[${stored.join(", ")}]`;
  switch (t?.kind) {
    case undefined:
      return have === want ? undefined : `has shape ${have}, the parameter ${want}`;
    case "transpose":
      return stored.length === 2 && stored[0] === param[1] && stored[1] === param[0] && param.length === 2
        ? undefined
        : `has shape ${have}, which transposed is not the parameter's ${want}`;
    case "reshape":
      return numel(stored) === numel(param) ? undefined : `has shape ${have} (${numel(stored)} elements), the parameter ${want} (${numel(param)})`;
    case "rope-interleaved-to-half": {
      if (have !== want) return `has shape ${have}, the parameter ${want}`;
      const rows = param[0];
      return rows % t.heads === 0 && (rows / t.heads) % 2 === 0 ? undefined : `has ${rows} rows, which do not split into ${t.heads} heads of an even size`;
    }
  }
}

/** `data` (stored layout, shape `stored`) in the parameter's layout. */
export function applyTransform(t: Transform | undefined, data: Float32Array, stored: readonly number[]): Float32Array {
  switch (t?.kind) {
    case undefined:
    case "reshape":
      return data;
    case "transpose": {
      const [r, c] = stored;
      const out = new Float32Array(data.length);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j];
      return out;
    }
    case "rope-interleaved-to-half": {
      const rows = stored[0];
      const cols = data.length / rows;
      const hd = rows / t.heads;
      const half = hd / 2;
      const out = new Float32Array(data.length);
      for (let h = 0; h < t.heads; h++)
        for (let i = 0; i < half; i++)
          for (let j = 0; j < 2; j++) {
            const to = (h * hd + j * half + i) * cols;
            const from = (h * hd + 2 * i + j) * cols;
            out.set(data.subarray(from, from + cols), to);
          }
      return out;
    }
  }
}
