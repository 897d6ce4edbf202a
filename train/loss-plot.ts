import { type LossPlotOptions, type PlotSeries, writeLossPlot } from "../io/loss-plot.ts";
import { type MetricsRecord, readMetrics } from "../io/metrics-log.ts";

const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/**
 * What a stage's loss.png shows, from its metrics.jsonl records (`{step, loss, grad_norm,
 * param_norm, lr}` per step, `{step, eval: {...}}` per held-out evaluation): the training loss
 * (left axis, log when positive), the held-out accuracy at the evaluated steps on a right
 * axis with the chance level (item accuracy for classification), and the learning rate in a
 * small panel below. Undefined when there is no finite loss to draw.
 */
export function lossPlot(records: readonly MetricsRecord[], title: string): { series: PlotSeries[]; opts: LossPlotOptions } | undefined {
  const loss = records.filter((r) => finite(r.loss)).map((r) => [r.step, r.loss as number] as [number, number]);
  if (!loss.length) return undefined;
  const evals = records.flatMap((r) => {
    const e = r.eval as Record<string, unknown> | undefined;
    const accuracy = e?.accuracy ?? e?.item_accuracy;
    return e && finite(accuracy)
      ? [{ step: r.step, accuracy, chance: e.chance, split: typeof e.split === "string" ? e.split : "held-out", item: "item_accuracy" in e }]
      : [];
  });
  const series: PlotSeries[] = [{ name: "training loss", points: loss }];
  const opts: LossPlotOptions = { title, xLabel: "step", yLabel: "training loss", logY: loss.every(([, y]) => y > 0) };
  if (evals.length) {
    const what = `${evals[0].split} ${evals[0].item ? "item accuracy" : "accuracy"}`;
    series.push({ name: `${what} (right axis)`, points: evals.map((e) => [e.step, e.accuracy]), style: "line+markers", axis: "right" });
    const chance = evals.find((e) => finite(e.chance))?.chance as number | undefined;
    if (chance !== undefined)
      series.push({
        name: `chance ${(100 * chance).toFixed(1)}%`,
        points: [
          [loss[0][0], chance],
          [loss.at(-1)![0], chance],
        ],
        style: "dashed",
        axis: "right",
      });
    opts.right = { label: what, percent: true, include: chance === undefined ? undefined : [chance, chance], ticksWithin: [0, 1] };
  }
  const lr = records.filter((r) => finite(r.lr)).map((r) => [r.step, r.lr as number] as [number, number]);
  if (lr.length) opts.lower = { axis: { label: "learning rate" }, series: [{ name: "learning rate", points: lr }] };
  return { series, opts };
}

/** Writes `png` from the metrics log; nothing when the log holds no finite loss. */
export async function plotLoss(metricsFile: string, png: string, title: string): Promise<void> {
  const plot = lossPlot(readMetrics(metricsFile), title);
  if (plot) await writeLossPlot(png, plot.series, plot.opts);
}
