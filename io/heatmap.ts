import { formatTick, niceTicks, px, svgStart, svgText, writeSvgAsPng } from "./svg.ts";

/*
 * Heat-maps as PNG (io/svg.ts: SVG text rasterised by sharp): one or more panels of the same
 * rows × columns on one shared colour scale (viridis), drawn beside them with its range.
 */

export interface HeatmapPanel {
  readonly title: string;
  /** [row][column] */
  readonly values: readonly (readonly number[])[];
}

export interface HeatmapOptions {
  readonly title: string;
  /** lines under the title */
  readonly subtitle?: readonly string[];
  readonly rowLabels: readonly string[];
  readonly colLabels: readonly string[];
  readonly rowTitle: string;
  readonly colTitle: string;
  /** what the colours stand for */
  readonly scaleLabel: string;
  /** panels per row of the picture (default: up to 4, rows filled evenly) */
  readonly columns?: number;
}

/** Matplotlib's viridis at nine even stops: perceptually even, readable in grey. */
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];

/** The viridis colour of t in [0, 1]. */
export function viridis(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const rgb = (h: string) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16));
  const [a, b] = [rgb(VIRIDIS[i]), rgb(VIRIDIS[i + 1])];
  return `#${a
    .map((v, k) =>
      Math.round(v + (b[k] - v) * f)
        .toString(16)
        .padStart(2, "0"),
    )
    .join("")}`;
}

const PANEL = { left: 74, right: 18, top: 30, bottom: 54 };
const HEADER = 50;
const SCALE_WIDTH = 120;

/** Where everything goes: the cell size, the panels' grid and the picture's size (the tests check the PNG against it). */
export function heatmapLayout(panels: number, rows: number, cols: number, opts: { columns?: number; subtitleLines?: number } = {}) {
  const cell = Math.max(8, Math.min(60, Math.floor(300 / Math.max(rows, cols))));
  const gridW = cols * cell;
  const gridH = rows * cell;
  const panelW = Math.max(200, PANEL.left + gridW + PANEL.right);
  const panelH = PANEL.top + gridH + PANEL.bottom;
  const columns = Math.max(1, Math.min(panels, opts.columns ?? Math.ceil(panels / Math.ceil(panels / 4))));
  const panelRows = Math.ceil(panels / columns);
  const header = HEADER + 18 * (opts.subtitleLines ?? 0);
  return {
    cell,
    gridW,
    gridH,
    panelW,
    panelH,
    columns,
    panelRows,
    header,
    width: 16 + columns * panelW + SCALE_WIDTH,
    height: header + panelRows * panelH + 12,
  };
}

/** The colour scale's range: the values' min and max, widened when they are (nearly) equal so the bar still reads. */
function scaleRange(panels: readonly HeatmapPanel[]): [number, number] {
  const all = panels.flatMap((p) => p.values.flat()).filter(Number.isFinite);
  let [lo, hi] = [Math.min(...all), Math.max(...all)];
  if (!all.length) [lo, hi] = [0, 1];
  if (hi - lo < 1e-6) [lo, hi] = [lo - 0.005, hi + 0.005];
  return [lo, hi];
}

/** Every label along an axis, or every k-th when the cells are too small for all. */
const labelEvery = (cell: number) => Math.max(1, Math.ceil(14 / cell));

export function buildHeatmapSvg(panels: readonly HeatmapPanel[], opts: HeatmapOptions): string {
  const rows = opts.rowLabels.length;
  const cols = opts.colLabels.length;
  for (const p of panels)
    if (p.values.length !== rows || p.values.some((r) => r.length !== cols)) throw new RangeError(`heat-map panel "${p.title}" is not ${rows}×${cols}`);
  const L = heatmapLayout(panels.length, rows, cols, { columns: opts.columns, subtitleLines: opts.subtitle?.length });
  const [lo, hi] = scaleRange(panels);
  const t = (v: number) => (v - lo) / (hi - lo);
  const parts = svgStart(L.width, L.height);
  parts.push(svgText(L.width / 2, 28, opts.title, 18, "middle"));
  opts.subtitle?.forEach((line, i) => parts.push(svgText(L.width / 2, 50 + 18 * i, line, 13, "middle", `fill-opacity="0.8"`)));
  const digits = L.cell >= 50 ? 3 : 2;
  const every = labelEvery(L.cell);
  panels.forEach((p, k) => {
    const x0 = 16 + (k % L.columns) * L.panelW + PANEL.left;
    const y0 = L.header + Math.floor(k / L.columns) * L.panelH + PANEL.top;
    parts.push(svgText(px(x0 + L.gridW / 2), y0 - 10, p.title, 13, "middle", `font-weight="bold"`));
    p.values.forEach((row, r) =>
      row.forEach((v, c) => {
        const [x, y] = [x0 + c * L.cell, y0 + r * L.cell];
        parts.push(`<rect x="${px(x)}" y="${px(y)}" width="${L.cell}" height="${L.cell}" fill="${viridis(t(v))}"/>`);
        if (L.cell >= 34)
          parts.push(svgText(px(x + L.cell / 2), px(y + L.cell / 2), v.toFixed(digits), 11, "middle", `dy="4" fill="${t(v) > 0.6 ? "#000" : "#fff"}"`));
      }),
    );
    parts.push(`<rect x="${x0}" y="${y0}" width="${L.gridW}" height="${L.gridH}" fill="none" stroke="#000" stroke-width="1"/>`);
    opts.rowLabels.forEach((label, r) => {
      if (r % every === 0) parts.push(svgText(x0 - 6, px(y0 + (r + 0.5) * L.cell), label, 11, "end", `dy="4"`));
    });
    opts.colLabels.forEach((label, c) => {
      if (c % every === 0) parts.push(svgText(px(x0 + (c + 0.5) * L.cell), y0 + L.gridH + 16, label, 11, "middle"));
    });
    parts.push(svgText(px(x0 + L.gridW / 2), y0 + L.gridH + 36, opts.colTitle, 12, "middle"));
    parts.push(svgText(0, 0, opts.rowTitle, 12, "middle", `transform="translate(${px(x0 - 36)} ${px(y0 + L.gridH / 2)}) rotate(-90)"`));
  });

  // the colour scale, top to bottom from hi to lo, with ticks and its range spelled out
  const barX = 16 + L.columns * L.panelW + 10;
  const barY = L.header + PANEL.top;
  const barH = Math.max(120, Math.min(L.gridH, 300));
  parts.push(
    `<defs><linearGradient id="scale" x1="0" y1="1" x2="0" y2="0">${VIRIDIS.map((c, i) => `<stop offset="${(i / (VIRIDIS.length - 1)).toFixed(3)}" stop-color="${c}"/>`).join("")}</linearGradient></defs>`,
  );
  parts.push(`<rect x="${barX}" y="${barY}" width="18" height="${barH}" fill="url(#scale)" stroke="#000" stroke-width="1"/>`);
  parts.push(svgText(barX, barY - 10, opts.scaleLabel, 12, "start", `font-weight="bold"`));
  const ticks = [lo, ...niceTicks(lo, hi, 4).filter((v) => v > lo + (hi - lo) * 0.12 && v < hi - (hi - lo) * 0.12), hi];
  for (const v of ticks) {
    const y = px(barY + barH - t(v) * barH);
    parts.push(`<line x1="${barX + 18}" y1="${y}" x2="${barX + 23}" y2="${y}" stroke="#000" stroke-width="1"/>`);
    const label = v === lo || v === hi ? v.toFixed(4) : formatTick(v);
    parts.push(svgText(barX + 26, y, label, 11, "start", `dy="4"`));
  }
  parts.push(`</svg>`);
  return parts.join("\n");
}

export async function writeHeatmap(path: string, panels: readonly HeatmapPanel[], opts: HeatmapOptions): Promise<void> {
  await writeSvgAsPng(path, buildHeatmapSvg(panels, opts));
}
