import { didYouMean, UserError } from "../grammar/diagnostics.ts";
import type { Shape } from "./dims.ts";
import type { CompiledModel, TapValue } from "./elaborate.ts";

/** A tap's value read back as an output of a run. */
export interface TapOutput {
  /** the tap's path, e.g. `dehvf.alpha` */
  readonly path: string;
  /** which of its values (a block called once per fusion target taps once per call) */
  readonly call: number;
  /** the fusion site being replaced when it was computed (`language.layer.3.memory`), if any */
  readonly site?: string;
  /** the output's name in the model and its plans */
  readonly name: string;
  readonly shape: Shape;
}

/** The name a tap's value has as an output: `tap:dehvf.alpha#2`. */
export const tapOutputName = (path: string, call: number): string => `tap:${path}#${call}`;

/** Every value of the tap at `path`, in the order computed; an unknown path is an error naming the near ones. */
export function tapValues(model: CompiledModel, path: string): readonly TapValue[] {
  const values = model.taps?.get(path);
  if (values?.length) return values;
  const known = [...(model.taps?.keys() ?? [])];
  throw new UserError(`model \`${model.name}\` has no tap \`${path}\`${didYouMean(path, known) ? `; ${didYouMean(path, known)}` : ""}`);
}

/**
 * The model with the values of some taps as extra outputs (every call's value of each path,
 * named by tapOutputName), for a run that reads them back: the same graph, so a plan built
 * from it computes exactly what the model computes. `keep: false` drops the model's own
 * outputs, so the plan computes only what the taps need.
 */
export function withTapOutputs(model: CompiledModel, paths: readonly string[], opts: { keep?: boolean } = {}): { model: CompiledModel; taps: TapOutput[] } {
  const read = paths.flatMap((path) =>
    tapValues(model, path).map((v, call) => ({
      node: v.node,
      tap: { path, call, ...(v.site !== undefined && { site: v.site }), name: tapOutputName(path, call), shape: v.node.shape },
    })),
  );
  const extra = read.map((r) => ({ name: r.tap.name, node: r.node }));
  const keep = opts.keep ?? true;
  // without its own outputs, a model updates no state either
  return {
    model: { ...model, outputs: [...(keep ? model.outputs : []), ...extra], ...(keep ? {} : { state: model.state.map((s) => ({ input: s.input })) }) },
    taps: read.map((r) => r.tap),
  };
}
