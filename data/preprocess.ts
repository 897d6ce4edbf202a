import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { dimStr } from "../compiler/dims.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { type Interpolation, type PreprocessSpec, type ResizeMode } from "../compiler/preprocess-decl.ts";
import { shownPath } from "../compiler/weight-sources.ts";
import { UserError } from "../grammar/diagnostics.ts";
import { DataError } from "./data-error.ts";

/** Fashion-MNIST pixel statistics; composites of its items share them. The default for a model that declares none. */
export const PIXEL_MEAN = 0.286;
export const PIXEL_STD = 0.353;

/** Hugging Face's image processor settings, beside a checkpoint's weights. */
export const PREPROCESSOR_CONFIG = "preprocessor_config.json";

/** How an image file becomes a model's `image` input: scaled to H×W, then (pixel / 255 - mean) / std per channel. */
export interface Preprocess {
  /** one per channel */
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly resize: ResizeMode;
  readonly interpolation: Interpolation;
  /** what each pixel value (0..255) is multiplied by before normalising; 1/255 unless a checkpoint says otherwise */
  readonly rescale: number;
  /** where the settings came from, for messages */
  readonly from: string;
}

/** The model's `image` input and how files are made into it. */
export interface ImageForm {
  /** [C, H, W] */
  readonly shape: readonly [number, number, number];
  readonly preprocess: Preprocess;
}

const DEFAULTS = { resize: "crop", interpolation: "bicubic", rescale: 1 / 255 } as const;

/** Today's tiny models: grey 56×56 Fashion-MNIST composites with the dataset's statistics. */
export function defaultForm(shape: readonly [number, number, number] = [1, 56, 56]): ImageForm {
  const c = shape[0];
  return {
    shape,
    preprocess: { mean: new Array(c).fill(PIXEL_MEAN), std: new Array(c).fill(PIXEL_STD), ...DEFAULTS, from: "the default (Fashion-MNIST's statistics)" },
  };
}

/** Identifies a form: two models with the same key see the same decoded images. */
export function formKey(f: ImageForm): string {
  const p = f.preprocess;
  return JSON.stringify([f.shape, p.mean, p.std, p.resize, p.interpolation, p.rescale]);
}

/** PIL's resample codes, as preprocessor_config.json stores them. */
const PIL_RESAMPLE: Record<number, Interpolation> = { 0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear" };

interface HfPreprocessor {
  image_mean?: number | number[];
  image_std?: number | number[];
  do_normalize?: boolean;
  do_rescale?: boolean;
  rescale_factor?: number;
  resample?: number;
  size?: number | { shortest_edge?: number; height?: number; width?: number };
}

type Settings = { -readonly [K in keyof Omit<Preprocess, "from">]?: Preprocess[K] };

/** The settings of a Hugging Face preprocessor_config.json that decide the pixels (sizes come from the model's input). */
export function readPreprocessorConfig(path: string): Settings {
  let cfg: HfPreprocessor;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8")) as HfPreprocessor;
  } catch (e) {
    throw new DataError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (!cfg || typeof cfg !== "object") throw new DataError(`${path}: not a preprocessor configuration (expected a JSON object)`);
  const list = (v: unknown, key: string): number[] | undefined => {
    if (v === undefined) return undefined;
    const xs = Array.isArray(v) ? v : [v];
    if (!xs.length || xs.some((x) => typeof x !== "number" || !Number.isFinite(x)))
      throw new DataError(`${path}: \`${key}\` must be a number or a list of numbers`);
    return xs as number[];
  };
  const out: Settings = {};
  if (cfg.do_normalize === false) [out.mean, out.std] = [[0], [1]];
  else {
    out.mean = list(cfg.image_mean, "image_mean");
    out.std = list(cfg.image_std, "image_std");
    if (out.std?.some((x) => !(x > 0))) throw new DataError(`${path}: \`image_std\` must be greater than 0`);
  }
  if (cfg.do_rescale === false) out.rescale = 1;
  else if (cfg.rescale_factor !== undefined) {
    if (typeof cfg.rescale_factor !== "number" || !(cfg.rescale_factor > 0)) throw new DataError(`${path}: \`rescale_factor\` must be a positive number`);
    out.rescale = cfg.rescale_factor;
  }
  if (cfg.resample !== undefined) {
    const r = PIL_RESAMPLE[cfg.resample];
    if (!r) throw new DataError(`${path}: unknown \`resample\` ${JSON.stringify(cfg.resample)} (PIL's codes 0..5)`);
    out.interpolation = r;
  }
  // {height, width}: both sides scaled to fit (SigLIP); {shortest_edge}: shortest side, then a centre crop (CLIP)
  if (cfg.size && typeof cfg.size === "object" && cfg.size.height !== undefined && cfg.size.width !== undefined) out.resize = "fill";
  else if (cfg.size !== undefined) out.resize = "crop";
  return out;
}

/** preprocessor_config.json beside the weights a model takes from checkpoints (vision towers first), if any. */
function checkpointPreprocessor(model: CompiledModel): string | undefined {
  const sources = model.params.flatMap((p) => (p.source ? [p.source] : []));
  const ordered = [...sources.filter((s) => /vision/.test(s.family)), ...sources];
  const seen = new Set<string>();
  for (const s of ordered) {
    if (seen.has(s.file)) continue;
    seen.add(s.file);
    const dir = existsSync(s.file) && statSync(s.file).isDirectory() ? s.file : dirname(s.file);
    const file = join(dir, PREPROCESSOR_CONFIG);
    if (existsSync(file)) return file;
  }
  return undefined;
}

/** [C, H, W] of the model's `image` input, or undefined when it takes none. */
export function imageShape(model: CompiledModel): [number, number, number] | undefined {
  const input = model.inputs.find((i) => i.name === "image");
  if (!input) return undefined;
  const [, c, h, w] = input.shape;
  if (input.shape.length !== 4 || typeof c !== "number" || typeof h !== "number" || typeof w !== "number")
    throw new UserError(
      `model \`${model.name}\`'s image input is [${input.shape.map(dimStr).join(", ")}]; images are read into [B, C, H, W] with constant C, H and W`,
    );
  if (c !== 1 && c !== 3) throw new UserError(`model \`${model.name}\` takes ${c}-channel images; files are read as grey (C = 1) or RGB (C = 3)`);
  return [c, h, w];
}

/**
 * How files become the model's `image` input: its shape, and the preprocessing from the
 * model's `preprocess(...)`, else from preprocessor_config.json beside its checkpoint
 * weights, else the defaults (Fashion-MNIST's statistics, shortest side + centre crop,
 * bicubic); a declaration's arguments override the checkpoint's, one by one.
 */
export function imageForm(model: CompiledModel): ImageForm | undefined {
  const shape = imageShape(model);
  if (!shape) return undefined;
  const declared: Omit<PreprocessSpec, "span"> | undefined = model.preprocess;
  const configFile = checkpointPreprocessor(model);
  const fromConfig = configFile ? readPreprocessorConfig(configFile) : {};
  const base = defaultForm(shape).preprocess;
  const pick = <K extends keyof Settings>(k: K): Preprocess[K] => ((declared as Settings | undefined)?.[k] ?? fromConfig[k] ?? base[k]) as Preprocess[K];
  const perChannel = (xs: readonly number[], key: string, from: string) => {
    if (xs.length === shape[0]) return xs;
    if (xs.length === 1) return new Array(shape[0]).fill(xs[0]);
    throw new DataError(`${from}: \`${key}\` has ${xs.length} values; model \`${model.name}\` takes ${shape[0]}-channel images`);
  };
  const from = [declared && "the model's `preprocess`", configFile && shownPath(configFile)].filter(Boolean).join(" and ") || base.from;
  const whereOf = (k: "mean" | "std") => (declared?.[k] ? "the model's `preprocess`" : fromConfig[k] && configFile ? configFile : base.from);
  return {
    shape,
    preprocess: {
      mean: perChannel(pick("mean"), "mean", whereOf("mean")),
      std: perChannel(pick("std"), "std", whereOf("std")),
      resize: pick("resize"),
      interpolation: pick("interpolation"),
      rescale: pick("rescale"),
      from,
    },
  };
}
