import type { CompiledModel, FusionInfo } from "../compiler/elaborate.ts";
import { interpret } from "../compiler/interpret.ts";
import { type TapOutput, withTapOutputs } from "../compiler/tap-outputs.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { encodeText, lmBatch } from "../data/batches.ts";
import type { LoadedDataset, LoadedSplit } from "../data/loader.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { Gpu } from "../runtime/device.ts";
import type { CompileHook } from "../runtime/executor.ts";
import { seqLength } from "../data/examples.ts";
import { batches, Predictor, type Tally } from "./evaluate.ts";

/** The tap a fusion block names its mixing weights by: [sources, B] per call, a distribution over the sources (std/fusion.dehvf's DEHVF). */
export const ROUTER_TAP = "alpha";

/** Where a model's routing weights come from: the fusion whose block taps `alpha`, and the tap's paths (one per instance). */
export interface RouterSource {
  readonly fusion: FusionInfo;
  readonly paths: readonly string[];
  /** the fusion block's scalar arguments as the model sets them (`condition`, `groups`, …) */
  readonly args: Readonly<Record<string, string | number | boolean>>;
  /** the text of its `features` clause, where it has one */
  readonly features?: string;
}

/**
 * The fusion that routes: the first whose block taps its mixing weights as `alpha` (every
 * fusion block that has a router or learned mixing weights should). A model with none (MemVP,
 * concat) is an error that says why.
 */
export function routerSource(model: CompiledModel): RouterSource {
  for (const f of model.fusions) {
    const child = model.root.children.get(f.name);
    const instances = child === undefined ? [] : Array.isArray(child) ? child : [child];
    if (!instances.length || !instances[0].taps.has(ROUTER_TAP)) continue;
    const args: Record<string, string | number | boolean> = {};
    for (const [k, v] of instances[0].args)
      if ((v.kind === "int" && typeof v.value === "number") || v.kind === "float" || v.kind === "bool" || v.kind === "string")
        args[k] = v.value as string | number | boolean;
    const decl = model.program.decls.get(model.name)?.members.find((m) => m.kind === "fusion" && m.name.name === f.name);
    const clause = decl?.kind === "fusion" ? decl.clauses.find((c) => c.name.name === "features") : undefined;
    const features = clause && model.program.sources.get(clause.value.span.file)?.text.slice(clause.value.span.start, clause.value.span.end);
    return { fusion: f, paths: instances.map((i) => `${i.path}.${ROUTER_TAP}`), args, ...(features && { features }) };
  }
  const fusions = model.fusions.map((f) => `\`${f.name}\` (${f.block})`).join(", ");
  throw new UserError(
    `model \`${model.name}\` has no router: ${fusions ? `none of its fusions (${fusions}) taps` : "it has no fusion that taps"} its mixing weights over the ViT layers as \`${ROUTER_TAP}\`. ` +
      `Only a DEHVF-style fusion routes (models/std/fusion.dehvf: \`tap ${ROUTER_TAP} = …\` in block DEHVF); MemVP reads one fixed ViT layer and concat prepends tokens.`,
  );
}

/** The routing weights of one model over held-out examples: per LLM layer (target), the mean over examples of α over the sources. */
export interface RouterReport {
  readonly model: string;
  readonly fusion: { readonly name: string; readonly block: string; readonly args: RouterSource["args"]; readonly features?: string };
  readonly taps: readonly string[];
  /** the targets' block instances, in order (`language.layer.0`): the rows */
  readonly llm_layers: readonly string[];
  /** the sources α ranges over (ViT layers, or groups of adjacent ones: `0–1`): the columns */
  readonly vit_layers: readonly string[];
  readonly split: string;
  readonly examples: number;
  /** [llm layer][vit layer] mean α over every example */
  readonly mean: number[][];
  /** the same per question type (the problem's `category`), with its count */
  readonly per_type: Record<string, { readonly examples: number; readonly mean: number[][] }>;
  /** the largest |per-type mean − overall mean|; the picture has a panel per type when this is above TYPES_DIFFER */
  readonly max_type_difference: number;
  readonly types_differ: boolean;
}

/** Per-type means that differ from the overall one by no more than this are the same (float32 rounding). */
export const TYPES_DIFFER = 1e-6;

/** Runs the model with its α taps as outputs on a feed; what evaluates it (the device plan or the float64 interpreter). */
export interface TapRunner {
  run(feed: ReadonlyMap<string, Tensor>): Promise<Tensor[]>;
  destroy(): void;
}

/** The device path: the tapped model planned like any forward (runtime/executor), reading back only the taps. */
export async function deviceTapRunner(
  gpu: Gpu,
  router: TappedRouter,
  dims: Readonly<Record<string, number>>,
  params: ReadonlyMap<string, Tensor>,
  compiling?: CompileHook,
): Promise<TapRunner> {
  const p = await Predictor.create(gpu, router.tapped, dims, params, compiling);
  return {
    run: (feed) =>
      p.outputs(
        feed,
        router.taps.map((t) => t.name),
      ),
    destroy: () => p.destroy(),
  };
}

/** The reference: the float64 interpreter on the elaborated graph (every parameter as float64). */
export function interpTapRunner(router: TappedRouter, dims: Readonly<Record<string, number>>, params: ReadonlyMap<string, Tensor>): TapRunner {
  const nodes = router.tapped.outputs.map((o) => o.node);
  return { run: async (feed) => interpret(nodes, { dims, inputs: feed, params }), destroy: () => {} };
}

/** `language.layer.3.memory` → `language.layer.3`: the block instance a site belongs to. */
const siteOwner = (site: string) => site.slice(0, site.lastIndexOf(".")) || site;

/** A model with its routing weights as outputs, and the layout of the report. */
export interface TappedRouter {
  readonly model: CompiledModel;
  readonly source: RouterSource;
  /** the model with the α taps as its outputs (and no others) */
  readonly tapped: CompiledModel;
  readonly taps: readonly TapOutput[];
  /** rows: the targets' instances; columns: the sources */
  readonly llmLayers: readonly string[];
  readonly vitLayers: readonly string[];
}

/** The model with its routing weights as outputs (compiler/tap-outputs.ts); an error for a model without a router. */
export function tapRouter(model: CompiledModel): TappedRouter {
  const source = routerSource(model);
  const { model: tapped, taps } = withTapOutputs(model, source.paths, { keep: false });
  const sources = taps[0].shape[0];
  if (taps.some((t) => t.shape.length !== 2 || t.shape[0] !== sources) || typeof sources !== "number")
    throw new UserError(
      `tap \`${source.paths[0]}\` of model \`${model.name}\` should be [sources, B] (the mixing weights of each example over the ViT layers), but is ${taps.map((t) => `[${t.shape.map(String).join(", ")}]`).join(", ")}`,
    );
  const group = typeof source.args.groups === "number" && source.args.groups > 1 ? source.args.groups : 1;
  const vitLayers = Array.from({ length: sources }, (_, j) => (group > 1 ? `${j * group}–${j * group + group - 1}` : String(j)));
  const llmLayers = taps.map((t, i) => (t.site ? siteOwner(t.site) : `call ${i}`));
  return { model, source, tapped, taps, llmLayers, vitLayers };
}

/** Mean α per type and overall, [layer][source], accumulated in float64 over batches. */
class Means {
  private readonly sums = new Map<string, { n: number; sum: Float64Array }>();
  constructor(
    private readonly layers: number,
    private readonly sources: number,
  ) {}

  add(type: string, layer: number, alpha: Tensor, b: number): void {
    const B = alpha.shape[1];
    const acc = this.sums.get(type) ?? this.sums.set(type, { n: 0, sum: new Float64Array(this.layers * this.sources) }).get(type)!;
    for (let j = 0; j < this.sources; j++) acc.sum[layer * this.sources + j] += alpha.data[j * B + b];
    if (layer === 0) acc.n++;
  }

  mean(type: string): { examples: number; mean: number[][] } {
    const acc = this.sums.get(type)!;
    return {
      examples: acc.n,
      mean: Array.from({ length: this.layers }, (_, l) => Array.from(acc.sum.subarray(l * this.sources, (l + 1) * this.sources), (x) => x / acc.n)),
    };
  }

  types(): string[] {
    return [...this.sums.keys()].filter((t) => t !== ALL).sort();
  }
}

const ALL = "\u0000all";

/**
 * The examples the router is averaged over: the split's questions (their images and prompts,
 * worded and tokenized as the stage trained on them), at most `limit`.
 */
function routerExamples(data: LoadedDataset, split: LoadedSplit, limit: number) {
  const tok = data.tokenizer!;
  return split.vqa.slice(0, limit).map((e) => ({ ...encodeText(tok, data.format.parts(e.problem)), image: e.image, category: e.problem.category }));
}

/** The dims a router run plans for: B rows of the examples' longest text. */
export function routerDims(data: LoadedDataset, split: LoadedSplit, limit: number, batch: number): Record<string, number> {
  const ex = routerExamples(data, split, limit);
  if (!ex.length) throw new UserError(`the ${split.split} split has no questions with an image to route`);
  return { B: Math.min(batch, ex.length), T: seqLength(ex) };
}

/**
 * The mean routing weights over the held-out questions, overall and per question type: each
 * batch is laid out as in training (<bos> prompt answer, the prompt mask on the prompt), so
 * α is what the fusion computed while it trained (the router reads only prompt positions,
 * and attention is causal, so the answer tokens do not change it).
 */
export async function routerMeans(
  router: TappedRouter,
  runner: TapRunner,
  data: LoadedDataset,
  splitName: "val" | "test",
  limit: number,
  dims: Readonly<Record<string, number>>,
  tally?: Tally,
): Promise<RouterReport> {
  const split = data.splits[splitName];
  if (!split?.imageShape) throw new Error(`the ${splitName} split was not loaded with images`);
  const { model, source, taps, llmLayers, vitLayers } = router;
  const ex = routerExamples(data, split, limit);
  const { B, T } = dims;
  if (tally) tally.total += ex.length;
  const means = new Means(taps.length, vitLayers.length);
  for (const { idx, real } of batches(ex.length, B)) {
    const b = lmBatch(data.tokenizer!, ex, idx, T);
    const feed = new Map([
      ["tokens", tensor([B, T], b.tokens)],
      ["prompt_mask", tensor([B, T], b.promptMask)],
      ["image", tensor([B, ...split.imageShape], b.image)],
    ]);
    const alphas = await runner.run(feed);
    for (let r = 0; r < real; r++)
      alphas.forEach((a, layer) => {
        means.add(ALL, layer, a, r);
        means.add(ex[idx[r]].category, layer, a, r);
      });
    if (tally) tally.done += real;
  }
  const all = means.mean(ALL);
  const per_type = Object.fromEntries(means.types().map((t) => [t, means.mean(t)]));
  const diff = Math.max(0, ...Object.values(per_type).flatMap((p) => p.mean.flatMap((row, l) => row.map((x, j) => Math.abs(x - all.mean[l][j])))));
  return {
    model: model.name,
    fusion: { name: source.fusion.name, block: source.fusion.block, args: source.args, ...(source.features && { features: source.features }) },
    taps: source.paths,
    llm_layers: llmLayers,
    vit_layers: vitLayers,
    split: splitName,
    examples: all.examples,
    mean: all.mean,
    per_type,
    max_type_difference: diff,
    types_differ: Object.keys(per_type).length > 1 && diff > TYPES_DIFFER,
  };
}
