import type * as A from "../grammar/ast.ts";
import { type Diagnostic, didYouMean, fail } from "../grammar/diagnostics.ts";
import type { Span } from "../grammar/source.ts";
import type { Shape } from "./dims.ts";

export const RESIZE_MODES = ["crop", "fill"] as const;
/** how an image is scaled to the model's H×W: `crop` shortest side to fit, then the centre (CLIP); `fill` both sides to fit, aspect not kept (SigLIP) */
export type ResizeMode = (typeof RESIZE_MODES)[number];
export const INTERPOLATIONS = ["bicubic", "bilinear", "nearest", "lanczos"] as const;
export type Interpolation = (typeof INTERPOLATIONS)[number];

/** A model's `preprocess(...)`, as written: what it leaves out comes from a checkpoint's preprocessor_config.json or the defaults (data/preprocess.ts). */
export interface PreprocessSpec {
  /** per channel, or one value for every channel */
  readonly mean?: readonly number[];
  readonly std?: readonly number[];
  readonly resize?: ResizeMode;
  readonly interpolation?: Interpolation;
  readonly span: Span;
}

const KEYS = ["mean", "std", "resize", "interpolation"] as const;

/** A number literal, negative ones included. */
function numberOf(e: A.Expr): number | undefined {
  if (e.kind === "number") return e.value;
  if (e.kind === "unary" && e.op === "-" && e.operand.kind === "number") return -e.operand.value;
  return undefined;
}

/** The values of `preprocess(...)`, or the first problem with them. */
function read(decl: A.PreprocessDecl): { spec: PreprocessSpec } | { problem: string; span: Span; hint?: string } {
  const spec: { -readonly [K in keyof PreprocessSpec]: PreprocessSpec[K] } = { span: decl.span };
  const seen = new Set<string>();
  for (const a of decl.args) {
    if (!a.name)
      return {
        problem: "`preprocess` takes named arguments",
        span: a.span,
        hint: `e.g. \`preprocess(mean: [0.4815, 0.4578, 0.4082], std: [0.2686, 0.2613, 0.2758])\`; names: ${KEYS.join(", ")}`,
      };
    const key = a.name.name;
    if (!(KEYS as readonly string[]).includes(key))
      return { problem: `unknown \`preprocess\` argument \`${key}\``, span: a.name.span, hint: didYouMean(key, KEYS) ?? `arguments: ${KEYS.join(", ")}` };
    if (seen.has(key)) return { problem: `\`${key}\` is given twice`, span: a.name.span };
    seen.add(key);
    const v = a.value;
    if (key === "mean" || key === "std") {
      const items = v.kind === "list" ? v.items : [v];
      const nums = items.map(numberOf);
      if (!items.length || nums.some((x) => x === undefined))
        return { problem: `\`${key}\` must be a number or a list of numbers (one per channel)`, span: v.span };
      if (key === "std" && nums.some((x) => !(x! > 0))) return { problem: "`std` must be greater than 0 for every channel", span: v.span };
      spec[key] = nums as number[];
    } else {
      const allowed: readonly string[] = key === "resize" ? RESIZE_MODES : INTERPOLATIONS;
      if (v.kind !== "string" || !allowed.includes(v.value))
        return {
          problem: `\`${key}\` must be one of ${allowed.map((x) => `"${x}"`).join(", ")}`,
          span: v.span,
          hint: v.kind === "string" ? didYouMean(v.value, allowed) : undefined,
        };
      if (key === "resize") spec.resize = v.value as ResizeMode;
      else spec.interpolation = v.value as Interpolation;
    }
  }
  return { spec };
}

/** Link-time checks of a block's `preprocess(...)`: in a model, at most one, known arguments with literal values. */
export function checkPreprocessDecls(decl: A.BlockDecl, report: (d: Diagnostic) => void): void {
  for (const [i, p] of (decl.preprocess ?? []).entries()) {
    if (decl.kind !== "model") report({ phase: "link", message: `\`preprocess\` belongs in a \`model\`, not in block \`${decl.name.name}\``, span: p.span });
    else if (i > 0)
      report({ phase: "link", message: `model \`${decl.name.name}\` declares \`preprocess\` twice`, span: p.span, hint: "keep one `preprocess(...)`" });
    const r = read(p);
    if ("problem" in r) report({ phase: "link", message: r.problem, span: r.span, hint: r.hint });
  }
}

/**
 * The model's `preprocess(...)`, checked against its inputs: it needs an `image` input
 * [B, C, H, W], and `mean` / `std` give one value or C values.
 */
export function preprocessOf(decl: A.BlockDecl, inputs: readonly { readonly name: string; readonly shape: Shape }[]): PreprocessSpec | undefined {
  const p = decl.preprocess?.[0];
  if (!p) return undefined;
  const r = read(p);
  if ("problem" in r) return fail("link", r.problem, r.span, r.hint);
  const image = inputs.find((i) => i.name === "image");
  if (!image) return fail("input", `model \`${decl.name.name}\` declares \`preprocess\` but takes no \`image\` input`, p.span);
  const c = image.shape[1];
  for (const key of ["mean", "std"] as const) {
    const n = r.spec[key]?.length;
    if (n !== undefined && n !== 1 && n !== c)
      fail(
        "shape",
        `\`${key}\` has ${n} values; the \`image\` input has ${typeof c === "number" ? c : "?"} channels (give one value, or one per channel)`,
        p.span,
      );
  }
  return r.spec;
}
