import { readFile } from "node:fs/promises";
import sharp from "sharp";
import type { Interpolation } from "../compiler/preprocess-decl.ts";
import { DataError } from "./data-error.ts";
import { decodeGreyPng } from "./png-grey.ts";
import type { ImageForm } from "./preprocess.ts";

const KERNEL: Record<Interpolation, keyof sharp.KernelEnum> = { bicubic: "cubic", bilinear: "linear", nearest: "nearest", lanczos: "lanczos3" };

/**
 * The size an image of w×h is resized to before the centre crop to W×H: the limiting side
 * becomes exactly its target and the other keeps the aspect, rounded down (Hugging Face's
 * `shortest_edge` resize, generalised to a non-square target).
 */
export function coverSize(w: number, h: number, W: number, H: number): { width: number; height: number } {
  if (w * H <= h * W) return { width: W, height: Math.max(H, Math.floor((h * W) / w)) };
  return { width: Math.max(W, Math.floor((w * H) / h)), height: H };
}

/** Pixels, channels interleaved (HWC, 8-bit), at the form's H×W. */
async function pixels(path: string, bytes: Buffer, form: ImageForm): Promise<{ data: Uint8Array; channels: number }> {
  const [c, H, W] = form.shape;
  const grey = c === 1 ? decodeGreyPng(bytes) : undefined;
  // the default dataset's images: exactly the model's size, no sharp call (data/png-grey.ts)
  if (grey && grey.width === W && grey.height === H) return { data: grey.pixels, channels: 1 };
  const p = form.preprocess;
  try {
    const meta = await sharp(bytes).metadata();
    if (!meta.width || !meta.height) throw new Error("no image size");
    let img = sharp(bytes);
    img = c === 1 ? img.flatten({ background: "#000000" }).greyscale() : img.removeAlpha().toColourspace("srgb");
    const size = p.resize === "fill" ? { width: W, height: H } : coverSize(meta.width, meta.height, W, H);
    if (size.width !== meta.width || size.height !== meta.height)
      img = img.resize(size.width, size.height, { fit: "fill", kernel: KERNEL[p.interpolation], fastShrinkOnLoad: false });
    if (size.width !== W || size.height !== H)
      img = img.extract({ left: Math.floor((size.width - W) / 2), top: Math.floor((size.height - H) / 2), width: W, height: H });
    const raw = await img.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
    if (raw.info.width !== W || raw.info.height !== H) throw new Error(`decoded to ${raw.info.width}×${raw.info.height}, expected ${W}×${H}`);
    return { data: raw.data, channels: raw.info.channels };
  } catch (e) {
    throw new DataError(`cannot decode image ${path}: ${(e as Error).message}`);
  }
}

/**
 * One image file, any format sharp reads (PNG, JPEG, WebP, ...) and any size, as the
 * model's input [C, H, W]: grey or RGB as C says, resized (`crop`: shortest side to fit,
 * then the centre; `fill`: both sides), then (pixel · rescale − mean) / std per channel.
 * Written into `out` at `offset`. A missing or undecodable file is a DataError naming it.
 */
export async function decodeImageInto(path: string, form: ImageForm, out: Float32Array, offset: number): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new DataError(`cannot read image ${path}: ${(e as Error).message}`);
  }
  const [C, H, W] = form.shape;
  const { mean, std, rescale } = form.preprocess;
  const { data, channels } = await pixels(path, bytes, form);
  // v / 255, not v · (1/255): the same float the grey images always gave
  const byDivision = Math.abs(rescale - 1 / 255) < 1e-15;
  const plane = H * W;
  for (let c = 0; c < C; c++)
    for (let i = 0; i < plane; i++) {
      const v = data[i * channels + c];
      out[offset + c * plane + i] = ((byDivision ? v / 255 : v * rescale) - mean[c]) / std[c];
    }
}
