import { mkdirSync } from "node:fs";
import { announcedCompile } from "../../runtime/compile-progress.ts";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import { checkSizes } from "../../compiler/size-limits.ts";
import {
  type RouterReport,
  routerDims,
  routerMeans,
  type TapRunner,
  deviceTapRunner,
  interpTapRunner,
  tapRouter,
  type TappedRouter,
} from "../../eval/router.ts";
import type { Tally } from "../../eval/evaluate.ts";
import { DehvfError } from "../../grammar/diagnostics.ts";
import { writeJsonAtomic } from "../../io/atomic.ts";
import { type HeatmapPanel, writeHeatmap } from "../../io/heatmap.ts";
import { during } from "../../io/progress.ts";
import { acquireGpu, type Gpu } from "../../runtime/device.ts";
import { hostLimits } from "../../runtime/host-limits.ts";
import { loadAllParams } from "../../runtime/interp-backend.ts";
import { deviceLimits } from "../../runtime/webgpu-backend.ts";
import { Dataset } from "../../train/data.ts";
import { positiveInt } from "./load.ts";
import { readTrainedWeights, trainedModel, trainedModelOptions } from "./trained.ts";

interface RouterOptions {
  model?: string;
  checkpoint: string;
  data?: string;
  cocoRoot?: string;
  split: "val" | "test";
  problems: number;
  batch: number;
  backend: string;
  out?: string;
  strict?: boolean;
}

export const ROUTER_FILES = { json: "router.json", png: "router.png" } as const;

/** `language.layer.0`, `language.layer.1` → `0`, `1` under the title `language.layer.N`: the labels without what they share. */
function compactLabels(labels: readonly string[]): { labels: string[]; pattern: string } {
  if (labels.length < 2) return { labels: [...labels], pattern: labels[0] ?? "" };
  let prefix = labels[0].slice(0, labels[0].lastIndexOf(".") + 1);
  while (prefix && !labels.every((l) => l.startsWith(prefix))) prefix = prefix.slice(0, prefix.slice(0, -1).lastIndexOf(".") + 1);
  return { labels: labels.map((l) => l.slice(prefix.length)), pattern: `${prefix}N` };
}

/** The picture: the overall mean, and one panel per question type when their means differ. */
async function drawRouter(png: string, r: RouterReport, backend: string): Promise<void> {
  const types = Object.entries(r.per_type);
  const panels: HeatmapPanel[] = [{ title: `all questions (${r.examples})`, values: r.mean }];
  if (r.types_differ) panels.push(...types.map(([t, p]) => ({ title: `${t} (${p.examples})`, values: p.mean })));
  const rows = compactLabels(r.llm_layers);
  const args = Object.entries(r.fusion.args)
    .filter(([k]) => k === "condition" || k === "groups")
    .map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  const subtitle = [
    `mean routing weight α over ${r.examples} held-out ${r.split} questions; each row sums to 1; ${backend}`,
    `fusion ${r.fusion.name} = ${r.fusion.block}(${args.join(", ")})${r.fusion.features ? `, features ${r.fusion.features}` : ""}, targets ${rows.pattern}`,
    ...(types.length > 1 && !r.types_differ
      ? [`the ${types.length} question types' means agree within ${r.max_type_difference.toExponential(1)}: one panel`]
      : []),
  ];
  const grouped = r.vit_layers.some((l) => l.includes("–"));
  await writeHeatmap(png, panels, {
    title: `${r.model}: which ViT layers each LLM layer reads`,
    subtitle,
    rowLabels: rows.labels,
    colLabels: r.vit_layers,
    rowTitle: "LLM layer",
    colTitle: grouped ? "ViT layers (group)" : "ViT layer",
    scaleLabel: "mean α",
  });
}

/** The table in the terminal: one line per LLM layer. */
function sayTable(say: (line: string) => void, r: RouterReport): void {
  const w = Math.max(...r.llm_layers.map((l) => l.length));
  say(`mean α over ${r.examples} ${r.split} questions (rows: LLM layers, columns: ViT layers ${r.vit_layers.join(" ")}):`);
  r.mean.forEach((row, l) => say(`  ${r.llm_layers[l].padEnd(w)}  ${row.map((x) => x.toFixed(4)).join("  ")}`));
  const types = Object.keys(r.per_type).length;
  if (types > 1)
    say(
      r.types_differ
        ? `per question type: ${types} types, the largest difference from the overall mean ${r.max_type_difference.toFixed(4)}`
        : `the ${types} question types route alike (within ${r.max_type_difference.toExponential(1)})`,
    );
}

export function registerInspect(program: Command): void {
  const inspect = program.command("inspect").description("look inside a trained model");
  trainedModelOptions(inspect.command("router"), "inspect")
    .description(
      "the mean routing weights α of a trained DEHVF fusion over held-out questions: router.png (LLM layer × ViT layer heat-map, a panel per question type when they differ) and router.json",
    )
    .option("--problems <n>", "at most this many held-out questions", positiveInt, 2000)
    .option("--batch <n>", "rows per forward", positiveInt, 64)
    .option("--backend <name>", "webgpu (the compiled plan) or interp (the float64 reference interpreter)", "webgpu")
    .option("-o, --out <dir>", "where router.png and router.json go (default: the checkpoint's directory)")
    .option("--strict", "exit with an error when the weights hold NaN or infinite values (default: a loud warning)")
    .action(async (file: string, opts: RouterOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      if (opts.backend !== "webgpu" && opts.backend !== "interp")
        throw new DehvfError([{ phase: "input", message: `unknown backend "${opts.backend}"`, hint: "available: webgpu, interp" }]);
      // a model without a router is refused before any file is read
      let router: TappedRouter | undefined;
      const trained = trainedModel(file, opts, (model) => (router = tapRouter(model)));
      const { model, weights, stage } = trained;
      // the output directory first: a place that cannot take the results fails before the work
      const out = opts.out ?? dirname(weights);
      mkdirSync(out, { recursive: true });
      const dataset = await Dataset.open(opts.data, say, [opts.split], { cocoRoot: opts.cocoRoot });
      const { data } = await dataset.forStage(model, stage);
      const split = data.splits[opts.split]!;
      const dims = routerDims(data, split, opts.problems, opts.batch);
      const gpu: Gpu | undefined = opts.backend === "webgpu" ? await acquireGpu() : undefined;
      let runner: TapRunner | undefined;
      try {
        checkSizes(model, dims, { host: hostLimits(), interp: !gpu, device: gpu && deviceLimits(gpu) });
        const { tensors, meta } = await readTrainedWeights(trained, opts.strict ?? false);
        if (gpu)
          runner = await deviceTapRunner(
            gpu,
            router!,
            dims,
            tensors,
            announcedCompile(say, (n) => `compiling the router plan's ${n} pipelines`),
          );
        else {
          // the interpreter takes every parameter as float64: the trained ones, and any `from "..."` checkpoint's
          const params = await loadAllParams(model, 0);
          for (const [k, v] of tensors) params.set(k, v);
          runner = interpTapRunner(router!, dims, params);
        }
        const n = Math.min(opts.problems, split.vqa.length);
        const tally: Tally = { done: 0, total: 0 };
        const report = await during(
          say,
          `routing ${n.toLocaleString("en-US")} held-out questions (${opts.split} split, ${opts.backend})`,
          () => routerMeans(router!, runner!, data, opts.split, opts.problems, dims, tally),
          {
            status: () => (tally.total ? `${tally.done.toLocaleString("en-US")} of ${tally.total.toLocaleString("en-US")}` : undefined),
          },
        );
        await writeJsonAtomic(join(out, ROUTER_FILES.json), {
          ...report,
          checkpoint: weights,
          stage: meta.stage,
          step: meta.step === undefined ? undefined : Number(meta.step),
          backend: opts.backend,
          dims,
        });
        await drawRouter(join(out, ROUTER_FILES.png), report, opts.backend);
        sayTable(say, report);
        say(`wrote ${join(out, ROUTER_FILES.png)} and ${join(out, ROUTER_FILES.json)}`);
      } finally {
        runner?.destroy();
        gpu?.destroy();
      }
    });
}
