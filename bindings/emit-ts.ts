import { type OptionalKind, type PropertySignatureStructure, Project, Scope, VariableDeclarationKind } from "ts-morph";
import { shapeStr } from "../compiler/dims.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import type { TapOutput } from "../compiler/tap-outputs.ts";
import { imageForm } from "../data/preprocess.ts";
import { type Plan, runnablePlan } from "../lowering/plan.ts";

/**
 * `dehvf compile FILE --emit ts`: one model as a TypeScript module for an app. Its inputs
 * and outputs as types (names, dtypes, shapes with the run-time dims it was compiled at),
 * its parameter table, and a class whose `load` opens the compiled plans (carried as data)
 * with a safetensors file's weights through the runtime core (`dehvf/runtime`), `forward`,
 * and `generate` when it takes tokens and returns logits. Written with ts-morph, so the
 * structure is built as syntax, not pasted strings.
 */

/** Generation compiled ahead: a prefill of a right-padded prompt window and a decode step (runtime/planned-decoder.ts). */
export interface GenerationPlans {
  readonly prefill: Plan;
  readonly decode: Plan;
  readonly prefillState: CompiledModel["state"];
  readonly decodeState: CompiledModel["state"];
  readonly prefix: number;
}

/** The plans at one weight storage. */
export interface PlansAt {
  readonly forward: Plan;
  readonly generation?: GenerationPlans;
}

const runnableSet = (p: PlansAt) => ({
  forward: runnablePlan(p.forward),
  ...(p.generation && {
    generation: { ...p.generation, prefill: runnablePlan(p.generation.prefill), decode: runnablePlan(p.generation.decode) },
  }),
});

export interface ModuleSource {
  /** the model as compiled: its inputs, outputs (taps included) and parameters */
  readonly model: CompiledModel;
  readonly plans: { readonly f32: PlansAt; readonly f16?: PlansAt };
  /** the taps among the outputs (compiler/tap-outputs.ts) */
  readonly taps: readonly TapOutput[];
  /** how it was made, for the header */
  readonly command: string;
  /** where the runtime core is imported from (default `dehvf/runtime`) */
  readonly runtime?: string;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const key = (name: string) => (IDENTIFIER.test(name) ? name : JSON.stringify(name));
const arrayType = (dtype: string) => (dtype === "i32" ? "Int32Array" : "Float32Array");

/** "[B, T] int, compiled at B=1, T=48: 48 values" */
function shapeDoc(shape: CompiledModel["inputs"][number]["shape"], compiled: readonly number[], dtype: string): string {
  const n = compiled.reduce((a, b) => a * b, 1);
  const symbolic = shapeStr(shape);
  const at = `[${compiled.join(", ")}]`;
  return `${dtype} ${symbolic}${symbolic === at ? "" : `, compiled as ${at}`}: ${n} value${n === 1 ? "" : "s"}`;
}

export function emitModelModule(src: ModuleSource): string {
  const { model, plans, taps } = src;
  const plan = plans.f32.forward;
  const name = model.name;
  const project = new Project({ useInMemoryFileSystem: true });
  const file = project.createSourceFile(`${name}.ts`, "", { overwrite: true });
  file.addImportDeclaration({
    moduleSpecifier: src.runtime ?? "dehvf/runtime",
    namedImports: [
      "type Gpu",
      "type GreedyOptions",
      "type HostArray",
      "LoadedModel",
      "type LoadOptions",
      "type ModelPlans",
      "type Platform",
      "type WeightsSource",
    ],
  });

  const tensorOf = (n: string, list: Plan["inputs"]) => {
    const t = list.find((x) => x.name === n);
    if (!t) throw new Error(`emit ts: the plan has no tensor ${n}`);
    return t;
  };
  file.addVariableStatement({
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: ["The run-time dimensions this module was compiled for: every shape below is at these."],
    declarations: [{ name: "dims", initializer: `${JSON.stringify(plan.dims)} as const` }],
  });

  const inputProps: OptionalKind<PropertySignatureStructure>[] = model.inputs.map((i) => {
    const t = tensorOf(i.name, plan.inputs);
    return { name: key(i.name), isReadonly: true, type: arrayType(t.dtype), docs: [shapeDoc(i.shape, t.shape, t.dtype)] };
  });
  file.addTypeAlias({
    isExported: true,
    name: `${name}Inputs`,
    docs: [`What ${name}.forward takes: one typed array per input, row-major.`],
    type: (w) => {
      w.block(() => {
        for (const p of inputProps) w.writeLine(`/** ${p.docs![0]} */`).writeLine(`readonly ${p.name}: ${p.type};`);
      });
    },
  });

  const own = model.outputs.filter((o) => !taps.some((t) => t.name === o.name));
  const tapPaths = [...new Set(taps.map((t) => t.path))];
  file.addTypeAlias({
    isExported: true,
    name: `${name}Outputs`,
    docs: [`What ${name}.forward returns, as f32.`],
    type: (w) => {
      w.block(() => {
        for (const o of own) {
          const t = tensorOf(o.name, plan.outputs);
          w.writeLine(`/** ${shapeDoc(o.node.shape, t.shape, "f32")} */`).writeLine(`readonly ${key(o.name)}: Float32Array;`);
        }
        if (tapPaths.length) {
          w.writeLine("/** the taps compiled in (`--tap`): each value in the order computed (one per fusion target) */");
          w.write("readonly taps: ").block(() => {
            for (const p of tapPaths) {
              const calls = taps.filter((t) => t.path === p);
              w.writeLine(`/** ${calls.length} × ${shapeDoc(calls[0].shape, tensorOf(calls[0].name, plan.outputs).shape, "f32")} */`);
              w.writeLine(`readonly ${key(p)}: readonly Float32Array[];`);
            }
          });
        }
      });
    },
  });

  const form = imageForm(model);
  if (form) {
    const { mean, std, rescale, resize, interpolation } = form.preprocess;
    file.addVariableStatement({
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: [
        `How a picture becomes the \`image\` input, as ${form.preprocess.from} says: ${form.shape.join("×")} (channels, height, width), each pixel value v (0..255) as (v × rescale − mean) / std per channel; training resized with ${resize} / ${interpolation}.`,
      ],
      declarations: [{ name: "imageForm", initializer: `${JSON.stringify({ shape: form.shape, mean, std, rescale })} as const` }],
    });
  }

  const trainable = new Map(model.params.map((p) => [p.name, p.trainable]));
  const used = [...new Set(plan.params.map((p) => p.part?.of ?? p.name))];
  file.addVariableStatement({
    isExported: true,
    declarationKind: VariableDeclarationKind.Const,
    docs: [
      "Every parameter the plans read: what the weights file passed to `load` must hold (by name, any float dtype); `f16`: stored at half precision by the f16 plan.",
    ],
    declarations: [
      {
        name: "parameters",
        type: "readonly { readonly name: string; readonly shape: readonly number[]; readonly trainable: boolean; readonly f16: boolean }[]",
        initializer: `[\n${used
          .map((n) => {
            const info = model.params.find((p) => p.name === n);
            const f16 = plans.f16?.forward.params.some((p) => (p.part?.of ?? p.name) === n && p.dtype === "f16") ?? false;
            return `  ${JSON.stringify({ name: n, shape: info?.shape ?? tensorOf(n, plan.params).shape, trainable: trainable.get(n) ?? false, f16 })},`;
          })
          .join("\n")}\n]`,
      },
    ],
  });

  file.addVariableStatement({
    declarationKind: VariableDeclarationKind.Const,
    docs: [
      "The compiled plans: the forward and, when it decodes, a prefill and a decode step; with f32 weights, and with f16 weights for adapters with shader-f16.",
    ],
    declarations: [
      {
        name: "plans",
        type: "ModelPlans",
        initializer: JSON.stringify({ f32: runnableSet(plans.f32), ...(plans.f16 && { f16: runnableSet(plans.f16) }) }),
      },
    ],
  });

  const generation = plans.f32.generation;
  const decodes = generation !== undefined;
  const fixed = ["tokens", "prompt_mask"];
  const cls = file.addClass({
    isExported: true,
    name,
    docs: [`${name} on a WebGPU device: \`await ${name}.load(device, weights)\`, then \`forward\`${decodes ? " or `generate`" : ""}; \`destroy\` frees it.`],
    ctors: [{ scope: Scope.Private, parameters: [{ name: "model", isReadonly: true, scope: Scope.Private, type: "LoadedModel" }] }],
  });
  cls.addMethod({
    isStatic: true,
    isAsync: true,
    name: "load",
    docs: [
      "Opens the model on `device` (a GPUDevice you requested, or a dehvf Gpu) with `weights`: a safetensors file's bytes, or a URL to fetch it from. Uses the f16 plan where the device has shader-f16, unless `opts.f16` is false.",
    ],
    parameters: [
      { name: "device", type: "GPUDevice | Gpu" },
      { name: "weights", type: "WeightsSource" },
      { name: "opts", type: "LoadOptions", initializer: "{}" },
    ],
    returnType: `Promise<${name}>`,
    statements: [`return new ${name}(await LoadedModel.load(device, plans, weights, opts));`],
  });
  cls.addMethod({
    isStatic: true,
    isAsync: true,
    name: "open",
    docs: [
      "The same, with the device and the weights file from a platform: `nodePlatform` (dehvf's runtime/node-platform.ts: Dawn, a path) or `browserPlatform` (navigator.gpu, a URL). `destroy` frees that device too.",
    ],
    parameters: [
      { name: "platform", type: "Platform" },
      { name: "weights", type: "string | URL" },
      { name: "opts", type: "LoadOptions", initializer: "{}" },
    ],
    returnType: `Promise<${name}>`,
    statements: [`return new ${name}(await LoadedModel.open(platform, plans, weights, opts));`],
  });
  cls.addGetAccessor({
    name: "weights",
    docs: ["How the frozen weights are stored on this device: f16 where the f16 plan runs."],
    returnType: '"f16" | "f32"',
    statements: ["return this.model.weightStorage;"],
  });
  cls.addMethod({
    isAsync: true,
    name: "forward",
    docs: ["One forward on the device: every input as a typed array at the compiled dims (checked), every output as f32."],
    parameters: [{ name: "inputs", type: `${name}Inputs` }],
    returnType: `Promise<${name}Outputs>`,
    statements: [
      "const out = await this.model.run({ ...inputs });",
      `return {\n${[
        ...own.map((o) => `  ${key(o.name)}: out[${JSON.stringify(o.name)}],`),
        ...(tapPaths.length
          ? [
              `  taps: {\n${tapPaths
                .map(
                  (p) =>
                    `    ${key(p)}: [${taps
                      .filter((t) => t.path === p)
                      .map((t) => `out[${JSON.stringify(t.name)}]`)
                      .join(", ")}],`,
                )
                .join("\n")}\n  },`,
            ]
          : []),
      ].join("\n")}\n};`,
    ],
  });
  if (decodes) {
    const rest = model.inputs.filter((i) => !fixed.includes(i.name));
    cls.addMethod({
      isAsync: true,
      name: "generate",
      docs: [
        `Greedy decoding of up to \`maxTokens\` token ids after \`prompt\` (ids) with a KV cache (a prompt of up to ${generation?.prefill.inputs.find((i) => i.name === "tokens")?.shape[1]} tokens, ${generation?.decode.dims.C} positions in all), stopping after an id in \`stop\`; give \`bos\` so a leading BOS stays out of prompt_mask, as in training.${rest.length ? ` The other inputs (${rest.map((i) => i.name).join(", ")}) stay fixed.` : ""}`,
      ],
      parameters: [
        { name: "prompt", type: "readonly number[]" },
        { name: "inputs", type: rest.length ? `Omit<${name}Inputs, ${fixed.map((f) => JSON.stringify(f)).join(" | ")}>` : "{}" },
        { name: "opts", type: "GreedyOptions" },
      ],
      returnType: "Promise<number[]>",
      statements: ["const rest: Record<string, HostArray> = { ...inputs };", "return this.model.greedy(prompt, rest, opts);"],
    });
  }
  cls.addMethod({
    name: "destroy",
    returnType: "void",
    docs: ["Frees the model's device buffers (and the device, when `open` made it)."],
    statements: ["this.model.destroy();"],
  });
  file.formatText({ indentSize: 2 });
  const header = [
    `// Generated by \`${src.command}\`: model ${name}. Do not edit; compile again instead.`,
    "// The plans below are the compiled kernels (WGSL), their bindings and the memory plan, as data.",
  ];
  return `${header.join("\n")}\n${file.getFullText()}`;
}
