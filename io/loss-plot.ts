import { formatTick, niceTicks, px, svgStart, svgText, writeSvgAsPng } from "./svg.ts";

export { formatTick, niceTicks } from "./svg.ts";

/*
 * Training curves as PNG (io/svg.ts: SVG text rasterised by sharp): a main panel with a left
 * axis (the loss) and optionally a right one (e.g. held-out accuracy), and optionally a small
 * panel below on the same steps (e.g. the learning rate); one legend above the panels.
 */

export interface PlotSeries {
  name: string;
  points: readonly (readonly [number, number])[];
  /**
   * "line" (default) draws a polyline; "markers" draws dots, e.g. for sparse eval points;
   * "line+markers" both; "dashed" a dashed line, e.g. a reference level
   */
  style?: "line" | "markers" | "line+markers" | "dashed";
  /** which y axis of its panel it is drawn against (default "left") */
  axis?: "left" | "right";
}

/** A y axis: its label, log scale, a fixed range, percentages. */
export interface PlotAxis {
  label: string;
  log?: boolean;
  /** the axis covers at least this range (the data may widen it) */
  include?: readonly [number, number];
  /** ticks only within this range (e.g. [0, 1] for an accuracy) */
  ticksWithin?: readonly [number, number];
  /** tick labels as percentages of 1 (0.25 → 25%) */
  percent?: boolean;
}

export interface LossPlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  width?: number;
  height?: number;
  /** a second y axis on the right of the main panel, for the series with `axis: "right"` */
  right?: PlotAxis;
  /** a smaller panel under the main one, on the same x axis */
  lower?: { readonly axis: PlotAxis; readonly series: readonly PlotSeries[] };
}

/** Per-series cap: more points than pixels only slow down rasterisation. */
export const MAX_POINTS_PER_SERIES = 2000;

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function validate(series: readonly PlotSeries[], logOf: (s: PlotSeries) => boolean): void {
  for (const s of series) {
    const logY = logOf(s);
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

type Points = [number, number][];

/** A y axis fitted to its series: the range (in log10 units on a log axis), its ticks, and the scale to pixels. */
interface FittedAxis {
  readonly y0: number;
  readonly y1: number;
  readonly ticks: readonly { v: number; label: string }[];
  readonly at: (y: number) => number;
}

function fitAxis(axis: PlotAxis, data: readonly Points[], top: number, height: number, targetTicks: number): FittedAxis {
  const log = axis.log ?? false;
  const tr = (y: number) => (log ? Math.log10(y) : y);
  const ys = data.flatMap((pts) => pts.map((p) => tr(p[1])));
  if (axis.include) ys.push(...axis.include.map(tr));
  let [y0, y1] = extent(ys);
  // a percentage spans at least 10 points, so a flat accuracy is not blown up into noise
  if (axis.percent && y1 - y0 < 0.1) [y0, y1] = [(y0 + y1) / 2 - 0.05, (y0 + y1) / 2 + 0.05];
  const pad = (y1 - y0) * 0.05;
  let ticks: { v: number; label: string }[];
  if (log) {
    ticks = logTicks(y0, y1).map((v) => ({ v: Math.log10(v), label: formatTick(v) }));
    [y0, y1] = [y0 - pad, y1 + pad];
  } else {
    [y0, y1] = [y0 - pad, y1 + pad];
    const within = axis.ticksWithin ?? [-Infinity, Infinity];
    ticks = niceTicks(y0, y1, targetTicks)
      .filter((v) => v >= within[0] && v <= within[1])
      .map((v) => ({ v, label: axis.percent ? `${formatTick(Number((v * 100).toPrecision(12)))}%` : formatTick(v) }));
  }
  return { y0, y1, ticks, at: (y: number) => top + height - ((tr(y) - y0) / (y1 - y0)) * height };
}

interface Panel {
  readonly top: number;
  readonly height: number;
  readonly left: FittedAxis;
  readonly right?: FittedAxis;
  readonly series: readonly { readonly s: PlotSeries; readonly points: Points; readonly color: string }[];
}

function drawPanel(
  parts: string[],
  p: Panel,
  frame: { x: number; w: number; sx: (x: number) => number; xTicks: readonly number[]; x0: number; x1: number; id: string },
  labels: { left: string; right?: string; xTickLabels: boolean },
): void {
  const { x, w, sx } = frame;
  const bottom = p.top + p.height;
  for (const t of p.left.ticks) {
    if (t.v < p.left.y0 || t.v > p.left.y1) continue;
    const y = px(p.top + p.height - ((t.v - p.left.y0) / (p.left.y1 - p.left.y0)) * p.height);
    parts.push(`<line x1="${x}" y1="${y}" x2="${x + w}" y2="${y}" stroke="#e6e6e6" stroke-width="1"/>`);
    parts.push(`<line x1="${x - 5}" y1="${y}" x2="${x}" y2="${y}" stroke="#000" stroke-width="1"/>`);
    parts.push(svgText(x - 8, y, t.label, 12, "end", `dy="4"`));
  }
  if (p.right)
    for (const t of p.right.ticks) {
      if (t.v < p.right.y0 || t.v > p.right.y1) continue;
      const y = px(p.top + p.height - ((t.v - p.right.y0) / (p.right.y1 - p.right.y0)) * p.height);
      parts.push(`<line x1="${x + w}" y1="${y}" x2="${x + w + 5}" y2="${y}" stroke="#000" stroke-width="1"/>`);
      parts.push(svgText(x + w + 8, y, t.label, 12, "start", `dy="4"`));
    }
  for (const v of frame.xTicks) {
    if (v < frame.x0 || v > frame.x1) continue;
    const xv = px(sx(v));
    parts.push(`<line x1="${xv}" y1="${p.top}" x2="${xv}" y2="${bottom}" stroke="#e6e6e6" stroke-width="1"/>`);
    parts.push(`<line x1="${xv}" y1="${bottom}" x2="${xv}" y2="${bottom + 5}" stroke="#000" stroke-width="1"/>`);
    if (labels.xTickLabels) parts.push(svgText(xv, bottom + 20, formatTick(v), 12, "middle"));
  }
  parts.push(`<rect x="${x}" y="${p.top}" width="${w}" height="${p.height}" fill="none" stroke="#000" stroke-width="1"/>`);
  parts.push(svgText(0, 0, labels.left, 14, "middle", `transform="translate(20 ${px(p.top + p.height / 2)}) rotate(-90)"`));
  if (labels.right !== undefined)
    parts.push(svgText(0, 0, labels.right, 14, "middle", `transform="translate(${px(x + w + 62)} ${px(p.top + p.height / 2)}) rotate(90)"`));

  // series, clipped to the panel
  parts.push(`<defs><clipPath id="${frame.id}"><rect x="${x}" y="${p.top}" width="${w}" height="${p.height}"/></clipPath></defs>`);
  parts.push(`<g clip-path="url(#${frame.id})">`);
  for (const { s, points, color } of p.series) {
    const axis = s.axis === "right" && p.right ? p.right : p.left;
    const pts = points.map(([a, b]) => [sx(a), axis.at(b)] as const);
    const style = s.style ?? "line";
    if (pts.length > 1 && style !== "markers") {
      const dash = style === "dashed" ? ` stroke-dasharray="6 4"` : "";
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="${style === "dashed" ? 1.2 : 1.5}"${dash} stroke-linejoin="round" points="${pts.map(([a, b]) => `${px(a)},${px(b)}`).join(" ")}"/>`,
      );
    }
    if (style === "markers" || style === "line+markers" || (pts.length === 1 && style !== "dashed"))
      for (const [a, b] of pts) parts.push(`<circle cx="${px(a)}" cy="${px(b)}" r="3.5" fill="${color}"/>`);
  }
  parts.push(`</g>`);
}

/** The legend, one row above the panels (it never covers a curve): a swatch and the name per series. */
function drawLegend(parts: string[], entries: readonly { s: PlotSeries; color: string }[], x: number, y: number, width: number): void {
  const widthOf = (name: string) => 34 + 7 * name.length + 16;
  const total = entries.reduce((a, e) => a + widthOf(e.s.name), 0);
  let at = x + Math.max(0, (width - total) / 2);
  for (const { s, color } of entries) {
    const style = s.style ?? "line";
    if (style !== "markers")
      parts.push(
        `<line x1="${px(at + 4)}" y1="${y}" x2="${px(at + 28)}" y2="${y}" stroke="${color}" stroke-width="2"${style === "dashed" ? ` stroke-dasharray="6 4"` : ""}/>`,
      );
    if (style === "markers" || style === "line+markers") parts.push(`<circle cx="${px(at + 16)}" cy="${y}" r="3.5" fill="${color}"/>`);
    parts.push(svgText(px(at + 34), y, s.name, 12, "start", `dy="4"`));
    at += widthOf(s.name);
  }
}

/** The SVG text of the chart; exported so callers can embed it (and tests can inspect it). */
export function buildLossPlotSvg(series: readonly PlotSeries[], opts: LossPlotOptions): string {
  const main: PlotAxis = { label: opts.yLabel, log: opts.logY ?? false };
  const lower = opts.lower;
  validate(series, (s) => (s.axis === "right" && opts.right ? (opts.right.log ?? false) : main.log!));
  if (lower) validate(lower.series, () => lower.axis.log ?? false);
  const W = opts.width ?? 960;
  const H = opts.height ?? 540;
  const all = [...series, ...(lower?.series ?? [])];
  const m = { left: 80, right: opts.right ? 80 : 24, top: all.length ? 70 : 48, bottom: 64 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const gap = lower ? 16 : 0;
  const mainHeight = lower ? Math.round((ph - gap) * 0.72) : ph;
  const colored = all.map((s, i) => ({ s, points: downsample(s.points), color: COLORS[i % COLORS.length] }));
  const upper = colored.slice(0, series.length);
  const below = colored.slice(series.length);

  const [x0, x1] = (() => {
    const [a, b] = extent(colored.flatMap((c) => c.points.map((p) => p[0])));
    // a little room on both sides so markers at the first/last step are not cut by the frame
    return [a - (b - a) * 0.01, b + (b - a) * 0.01];
  })();
  const xTicks = niceTicks(x0, x1);
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;

  const parts = svgStart(W, H);
  parts.push(svgText(W / 2, m.top > 48 ? 30 : m.top / 2 + 6, opts.title, 18, "middle"));
  if (all.length) drawLegend(parts, colored, m.left, m.top - 16, pw);
  const ofAxis = (cs: typeof colored, side: "left" | "right") => cs.filter((c) => (c.s.axis ?? "left") === side).map((c) => c.points);
  const upperPanel: Panel = {
    top: m.top,
    height: mainHeight,
    left: fitAxis(main, opts.right ? ofAxis(upper, "left") : upper.map((c) => c.points), m.top, mainHeight, 6),
    ...(opts.right && { right: fitAxis(opts.right, ofAxis(upper, "right"), m.top, mainHeight, 6) }),
    series: upper,
  };
  const frame = { x: m.left, w: pw, sx, xTicks, x0, x1 };
  drawPanel(
    parts,
    upperPanel,
    { ...frame, id: "plot" },
    { left: main.label + (main.log ? " (log)" : ""), ...(opts.right && { right: opts.right.label }), xTickLabels: !lower },
  );
  if (lower) {
    const top = m.top + mainHeight + gap;
    const height = ph - mainHeight - gap;
    drawPanel(
      parts,
      {
        top,
        height,
        left: fitAxis(
          lower.axis,
          below.map((c) => c.points),
          top,
          height,
          3,
        ),
        series: below,
      },
      { ...frame, id: "lower" },
      { left: lower.axis.label, xTickLabels: true },
    );
  }
  parts.push(svgText(m.left + pw / 2, H - 16, opts.xLabel, 14, "middle"));
  parts.push(`</svg>`);
  return parts.join("\n");
}

/** Renders the chart to PNG and writes it atomically (a viewer never sees a half-written file). */
export async function writeLossPlot(path: string, series: readonly PlotSeries[], opts: LossPlotOptions): Promise<void> {
  await writeSvgAsPng(path, buildLossPlotSvg(series, opts));
}
