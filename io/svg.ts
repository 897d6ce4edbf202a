import sharp from "sharp";
import { writeFileAtomic } from "./atomic.ts";

/*
 * Pictures as PNG without a plotting dependency: charts are built as SVG text and sharp
 * (librsvg) rasterises them, text included. Shared by the loss plot and the router heat-map.
 */

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/** Coordinates in SVG text: two decimals. */
export const px = (v: number): string => v.toFixed(2);

/** The opening of a W×H drawing on a white background. */
export function svgStart(width: number, height: number): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
}

/** One line of text, black unless `attrs` gives a fill; `attrs` adds e.g. a rotation or a font weight. */
export function svgText(x: number | string, y: number | string, text: string, size: number, anchor: "start" | "middle" | "end" = "start", attrs = ""): string {
  const fill = /(^|\s)fill=/.test(attrs) ? "" : ` fill="#000"`;
  return `<text x="${x}" y="${y}" font-size="${size}" text-anchor="${anchor}"${fill}${attrs ? ` ${attrs}` : ""}>${escapeXml(text)}</text>`;
}

/** Rasterises the SVG and writes the PNG atomically (a viewer never sees a half-written file). */
export async function writeSvgAsPng(path: string, svg: string): Promise<void> {
  const png = await sharp(Buffer.from(svg, "utf8")).png().toBuffer();
  await writeFileAtomic(path, png);
}

/** "Nice" tick values (1, 2, 5 × 10^k steps) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, target = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  // Multiply rather than accumulate, and round, so labels read 0.3 rather than 0.30000000000000004.
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(k === 0 ? 0 : Number((k * step).toPrecision(12)));
  return ticks;
}

export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}
