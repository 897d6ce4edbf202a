import { basename, dirname, relative, sep } from "node:path";
import type * as A from "../grammar/ast.ts";
import { loadProgram, MODELS_ROOT } from "../grammar/modules.ts";
import type { Catalog } from "../io/checkpoints/catalog.ts";
import { WeightsError } from "../io/checkpoints/errors.ts";
import type { ArgValue, Family, ImportSpec } from "../io/checkpoints/families.ts";

/** A block argument as a .dehvf literal of its declared type (floats keep a `.` or an exponent). */
function literal(v: ArgValue, type: string): string {
  if (type === "float" && typeof v === "number") return Number.isInteger(v) ? `${v}.0` : Math.abs(v) < 1e-3 ? v.toExponential() : String(v);
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** The std block a family's `import` section instantiates. */
function blockOf(spec: ImportSpec, family: Family): A.BlockDecl {
  const decl = loadProgram(`${MODELS_ROOT}${spec.file}`).decls.get(spec.block);
  if (!decl || decl.kind !== "block") throw new WeightsError(family.file, `names block \`${spec.block}\`, which ${spec.file} does not define`, "import.block");
  return decl;
}

/**
 * The instance's arguments from the checkpoint's config (config.json, or llama2.c's
 * header): each of the family's `arguments` whose key is present (else its default, else
 * the block's own default), then its `fixed` ones, checked against the block's parameter types.
 */
export function importArguments(
  catalog: Catalog,
  family: Family,
  spec: ImportSpec,
): { block: A.BlockDecl; args: [string, string][]; values: Record<string, ArgValue> } {
  const block = blockOf(spec, family);
  const nested = spec.config ? catalog.config[spec.config] : undefined;
  const config = nested && typeof nested === "object" && !Array.isArray(nested) ? (nested as Record<string, unknown>) : catalog.config;
  const where = spec.config && config !== catalog.config ? `${spec.config}.` : "";
  const values: Record<string, ArgValue> = {};
  const keyOf: Record<string, string> = {};
  for (const [arg, { key, default: dflt }] of Object.entries(spec.arguments)) {
    const v = config[key] ?? dflt;
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" && typeof v !== "boolean" && typeof v !== "string")
      throw new WeightsError(catalog.configFile, `is ${JSON.stringify(v)}, not a number, bool or string`, where + key);
    values[arg] = v;
    keyOf[arg] = where + key;
  }
  Object.assign(values, spec.fixed);
  const args: [string, string][] = [];
  for (const p of block.params) {
    const v = values[p.name.name];
    const key = keyOf[p.name.name] ?? `fixed.${p.name.name} of ${basename(family.file)}`;
    if (v === undefined) {
      if (!p.default)
        throw new WeightsError(
          catalog.configFile,
          `has no \`${spec.arguments[p.name.name]?.key ?? p.name.name}\`, needed for argument \`${p.name.name}\` of ${spec.block}`,
        );
      continue;
    }
    const type = p.type.name;
    const ok =
      type === "int"
        ? Number.isSafeInteger(v) && (v as number) > 0
        : type === "float"
          ? typeof v === "number" && Number.isFinite(v)
          : typeof v === (type === "bool" ? "boolean" : "string");
    if (!ok)
      throw new WeightsError(
        catalog.configFile,
        `is ${JSON.stringify(v)}, but argument \`${p.name.name}\` of ${spec.block} is ${type === "int" ? "a positive int" : `a ${type}`}`,
        key,
      );
    args.push([p.name.name, literal(v, type)]);
  }
  for (const arg of Object.keys(values))
    if (!block.params.some((p) => p.name.name === arg))
      throw new WeightsError(family.file, `maps argument \`${arg}\`, which block ${spec.block} does not have`, "import.arguments");
  return { block, args, values };
}

/** A model name from a checkpoint's file name: `stories260K.bin` → `Stories260K`. */
export function modelNameFor(checkpoint: string): string {
  const stem = basename(checkpoint)
    .replace(/\.(bin|safetensors|json)$/, "")
    .replace(/^model$/, basename(dirname(checkpoint)));
  const words = stem.split(/[^A-Za-z0-9]+/).filter(Boolean);
  const name = words.map((w) => w[0].toUpperCase() + w.slice(1)).join("");
  return /^[A-Za-z]/.test(name) ? name : `M${name}`;
}

/** `to` as a model file at `from` names it: relative, with forward slashes, as a string literal. */
export function pathLiteral(fromFile: string, to: string): string {
  return JSON.stringify(relative(dirname(fromFile), to).split(sep).join("/") || ".");
}

export interface ModelFileParts {
  readonly modelName: string;
  readonly spec: ImportSpec;
  readonly family: Family;
  readonly args: readonly [string, string][];
  readonly values: Readonly<Record<string, ArgValue>>;
  /** string literals, relative to the model file */
  readonly weights: string;
  readonly tokenizer?: string;
  readonly comments: readonly string[];
}

/** The text of an imported model file: the std import, the tokenizer, one frozen instance named after its weights, and a forward. */
export function modelFileText(p: ModelFileParts): string {
  const fill = (s: string) =>
    s.replace(/\{(\w+)\}/g, (all, k: string) => (k === "instance" ? p.spec.instance : p.values[k] !== undefined ? String(p.values[k]) : all));
  const call = `${p.spec.block}(${p.args.map(([k, v]) => `${k}: ${v}`).join(", ")})`;
  return [
    ...p.comments.map((c) => `# ${c}`),
    `import ${JSON.stringify(p.spec.file)}`,
    "",
    `model ${p.modelName} {`,
    ...(p.tokenizer ? [`  tokenizer ${p.tokenizer}`] : []),
    `  ${p.spec.instance} = ${call} frozen from ${p.weights} as ${p.family.name}`,
    `  ${fill(p.spec.forward)}`,
    "}",
    "",
  ].join("\n");
}
