import sharp from "sharp";
import { writeFileAtomic } from "./atomic.ts";

/*
 * Loss curves as PNG without a plotting dependency: build an SVG and let sharp (librsvg)
 * rasterise it, text included.
 */

export interface PlotSeries {
  name: string;
  points: readonly (readonly [number, number])[];
  /** "line" (default) draws a polyline; "markers" draws dots, e.g. for sparse eval points. */
  style?: "line" | "markers";
}

export interface LossPlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  width?: number;
  height?: number;
}

/** Per-series cap: more points than pixels only slow down rasterisation. */
export const MAX_POINTS_PER_SERIES = 2000;

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

function validate(series: readonly PlotSeries[], logY: boolean): void {
  for (const s of series) {
    s.points.forEach(([x, y], i) => {
      if (!Number.isFinite(x) || !Number.isFinite(y)) throw new RangeError(`loss plot: series "${s.name}" point ${i} is (${x}, ${y}); values must be finite`);
      if (logY && y <= 0) throw new RangeError(`loss plot: series "${s.name}" point ${i} has y = ${y}, which a log scale cannot show`);
    });
  }
}

/**
 * Keeps at most `max` points: the min and max y of each x-bucket, in x order. Unlike striding,
 * this keeps loss spikes visible.
 */
export function downsample(points: readonly (readonly [number, number])[], max: number = MAX_POINTS_PER_SERIES): [number, number][] {
  if (points.length <= max) return points.map(([x, y]) => [x, y]);
  const buckets = Math.max(1, Math.floor(max / 2));
  const out: [number, number][] = [];
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * points.length) / buckets);
    const hi = Math.floor(((b + 1) * points.length) / buckets);
    if (hi <= lo) continue;
    let iMin = lo;
    let iMax = lo;
    for (let i = lo + 1; i < hi; i++) {
      if (points[i][1] < points[iMin][1]) iMin = i;
      if (points[i][1] > points[iMax][1]) iMax = i;
    }
    const [a, c] = iMin <= iMax ? [iMin, iMax] : [iMax, iMin];
    out.push([points[a][0], points[a][1]]);
    if (c !== a) out.push([points[c][0], points[c][1]]);
  }
  return out;
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

/**
 * Tick values for a log axis spanning [10^lo, 10^hi]: powers of ten when that gives at least
 * three, else 1-2-5 steps, else every integer multiple within each decade.
 */
export function logTicks(lo: number, hi: number): number[] {
  for (const mults of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    const ticks: number[] = [];
    for (let e = Math.floor(lo) - 1; e <= Math.ceil(hi); e++) {
      for (const m of mults) {
        const v = Number((m * 10 ** e).toPrecision(12));
        const l = Math.log10(v);
        if (l >= lo - 1e-9 && l <= hi + 1e-9) ticks.push(v);
      }
    }
    if (ticks.length >= 3) return ticks;
  }
  return niceTicks(10 ** lo, 10 ** hi).filter((v) => v > 0);
}

export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}

function extent(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return [lo - pad, hi + pad];
  }
  return [lo, hi];
}

/** The SVG text of the chart; exported so callers can embed it (and tests can inspect it). */
export function buildLossPlotSvg(series: readonly PlotSeries[], opts: LossPlotOptions): string {
  const logY = opts.logY ?? false;
  validate(series, logY);
  const W = opts.width ?? 960;
  const H = opts.height ?? 540;
  const m = { left: 80, right: 24, top: 48, bottom: 64 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const data = series.map((s) => ({ ...s, points: downsample(s.points) }));

  const xs = data.flatMap((s) => s.points.map((p) => p[0]));
  const ys = data.flatMap((s) => s.points.map((p) => (logY ? Math.log10(p[1]) : p[1])));
  let [x0, x1] = extent(xs);
  let [y0, y1] = extent(ys);
  if (!logY) {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }

  let yTicks: { v: number; label: string }[];
  if (logY) {
    yTicks = logTicks(y0, y1).map((v) => ({ v: Math.log10(v), label: formatTick(v) }));
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  } else {
    yTicks = niceTicks(y0, y1).map((v) => ({ v, label: formatTick(v) }));
  }
  const xTicks = niceTicks(x0, x1);
  // A little room on both sides so markers at the first/last step are not cut by the frame.
  const xPad = (x1 - x0) * 0.01;
  x0 -= xPad;
  x1 += xPad;

  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const f = (v: number) => v.toFixed(2);

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${W / 2}" y="${m.top / 2 + 6}" font-size="18" text-anchor="middle" fill="#000">${escapeXml(opts.title)}</text>`);

  // Grid + ticks
  for (const t of yTicks) {
    if (t.v < y0 || t.v > y1) continue;
    const y = f(sy(t.v));
    parts.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e6e6e6" stroke-width="1"/>`);
    parts.push(`<line x1="${m.left - 5}" y1="${y}" x2="${m.left}" y2="${y}" stroke="#000" stroke-width="1"/>`);
    parts.push(`<text x="${m.left - 8}" y="${y}" dy="4" font-size="12" text-anchor="end" fill="#000">${escapeXml(t.label)}</text>`);
  }
  for (const v of xTicks) {
    if (v < x0 || v > x1) continue;
    const x = f(sx(v));
    parts.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#e6e6e6" stroke-width="1"/>`);
    parts.push(`<line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 5}" stroke="#000" stroke-width="1"/>`);
    parts.push(`<text x="${x}" y="${m.top + ph + 20}" font-size="12" text-anchor="middle" fill="#000">${escapeXml(formatTick(v))}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#000" stroke-width="1"/>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 16}" font-size="14" text-anchor="middle" fill="#000">${escapeXml(opts.xLabel)}</text>`);
  parts.push(`<text transform="translate(20 ${m.top + ph / 2}) rotate(-90)" font-size="14" text-anchor="middle" fill="#000">${escapeXml(opts.yLabel + (logY ? " (log)" : ""))}</text>`);

  // Series, clipped to the plot area
  parts.push(`<defs><clipPath id="plot"><rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}"/></clipPath></defs>`);
  parts.push(`<g clip-path="url(#plot)">`);
  data.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map(([x, y]) => [sx(x), sy(logY ? Math.log10(y) : y)] as const);
    if ((s.style ?? "line") === "markers" || pts.length === 1) {
      for (const [x, y] of pts) parts.push(`<circle cx="${f(x)}" cy="${f(y)}" r="3.5" fill="${color}"/>`);
    } else if (pts.length > 1) {
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" stroke-linejoin="round" points="${pts.map(([x, y]) => `${f(x)},${f(y)}`).join(" ")}"/>`);
    }
  });
  parts.push(`</g>`);

  // Legend (top right, inside the plot)
  if (data.length > 0) {
    const lh = 18;
    const lw = Math.min(pw - 16, 24 + 8 + 7.5 * Math.max(...data.map((s) => s.name.length)));
    const lx = m.left + pw - lw - 8;
    const ly = m.top + 8;
    parts.push(`<rect x="${f(lx)}" y="${ly}" width="${f(lw)}" height="${data.length * lh + 8}" fill="#ffffff" fill-opacity="0.85" stroke="#999" stroke-width="1"/>`);
    data.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const y = ly + 4 + lh * i + lh / 2;
      if ((s.style ?? "line") === "markers") parts.push(`<circle cx="${f(lx + 18)}" cy="${y}" r="3.5" fill="${color}"/>`);
      else parts.push(`<line x1="${f(lx + 8)}" y1="${y}" x2="${f(lx + 28)}" y2="${y}" stroke="${color}" stroke-width="2"/>`);
      parts.push(`<text x="${f(lx + 34)}" y="${y}" dy="4" font-size="12" fill="#000">${escapeXml(s.name)}</text>`);
    });
  }
  parts.push(`</svg>`);
  return parts.join("\n");
}

/** Renders the chart to PNG and writes it atomically (a viewer never sees a half-written file). */
export async function writeLossPlot(path: string, series: readonly PlotSeries[], opts: LossPlotOptions): Promise<void> {
  const svg = buildLossPlotSvg(series, opts);
  const png = await sharp(Buffer.from(svg, "utf8")).png().toBuffer();
  await writeFileAtomic(path, png);
}
