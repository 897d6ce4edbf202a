import { readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Catalog, CheckpointFormat } from "./catalog.ts";
import { FORMAT_NAMES } from "./catalog.ts";
import { WeightsError } from "./errors.ts";
import { readJson } from "./hf.ts";
import { TRANSFORMS, type TransformName } from "./transforms.ts";

/**
 * Checkpoint families: one declarative mapping table each, models/std/checkpoints/NAME.json
 * (the format is described in that folder's README.md). A table says how to recognise a
 * checkpoint, which std block `dehvf import` instantiates with which arguments from its
 * config, and which checkpoint tensor fills each parameter of that block.
 */
export const FAMILIES_DIR = fileURLToPath(new URL("../../models/std/checkpoints/", import.meta.url));

export type ArgValue = number | boolean | string;

export interface ImportSpec {
  /** the std file to import and the block to instantiate, as instance `instance` */
  readonly file: string;
  readonly block: string;
  readonly instance: string;
  /** config.json's sub-object that holds the arguments when present (CLIPModel's `vision_config`) */
  readonly config?: string;
  /** block argument ← config key (left to the block's default when the key is absent and no default is given) */
  readonly arguments: Readonly<Record<string, { readonly key: string; readonly default?: ArgValue }>>;
  readonly fixed: Readonly<Record<string, ArgValue>>;
  /** the model's forward, with {instance} and {argument} filled in */
  readonly forward: string;
}

export interface TensorRule {
  /** candidate checkpoint names, first present wins; {l} etc. from the parameter pattern, {instance}, {path} */
  readonly tensors: readonly string[];
  readonly transform?: TransformName;
  /** the block argument that holds the head count (rope-interleaved-to-half) */
  readonly heads?: string;
  /** absent from the checkpoint: the parameter keeps its init rule */
  readonly optional: boolean;
}

export interface ParamRule {
  /** parameter path relative to the instance, with {l} for indices and {path} for anything */
  readonly pattern: string;
  readonly regex: RegExp;
  readonly vars: readonly string[];
  readonly rule: TensorRule;
}

export interface Family {
  readonly name: string;
  readonly file: string;
  readonly description: string;
  readonly format: CheckpointFormat;
  readonly detect: { readonly architectures?: readonly string[]; readonly metadata?: readonly string[] };
  readonly import?: ImportSpec;
  readonly params: readonly ParamRule[];
  /** checkpoint tensors that may stay unused without a note (`*` any text, {l} an index) */
  readonly ignore: readonly RegExp[];
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** `layer.{l}.attn.wq.w` → /^layer\.(\d+)\.attn\.wq\.w$/ with vars ["l"]; {path} matches anything. */
function compilePattern(pattern: string): { regex: RegExp; vars: string[] } {
  const vars: string[] = [];
  const body = pattern
    .split(/(\{\w+\})/)
    .map((part) => {
      const m = /^\{(\w+)\}$/.exec(part);
      if (!m) return escape(part);
      vars.push(m[1]);
      return m[1] === "path" ? "(.+)" : "(\\d+)";
    })
    .join("");
  return { regex: new RegExp(`^${body}$`), vars };
}

function globRegex(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split(/(\*|\{\w+\})/)
      .map((p) => (p === "*" ? ".*" : /^\{\w+\}$/.test(p) ? "\\d+" : escape(p)))
      .join("")}$`,
  );
}

type Raw = Record<string, unknown>;

/** Reads and checks one table (following `extends`); a malformed table is the table file's error. */
function parseFamily(name: string, seen: readonly string[] = []): Family {
  const file = join(FAMILIES_DIR, `${name}.json`);
  const raw = readJson(file);
  const bad = (why: string, key?: string): never => {
    throw new WeightsError(file, why, key);
  };
  const str = (v: unknown, key: string): string => (typeof v === "string" ? v : bad("must be a string", key));
  if (raw.family !== name) bad(`\`family\` must be "${name}", the file's name`, "family");
  const base =
    raw.extends === undefined
      ? undefined
      : seen.includes(str(raw.extends, "extends"))
        ? bad(`extends itself through ${[...seen, name].join(" → ")}`, "extends")
        : parseFamily(raw.extends as string, [...seen, name]);
  const format = raw.format ?? base?.format;
  if (format !== "hf" && format !== "llama2c" && format !== "safetensors") bad(`must be one of ${Object.keys(FORMAT_NAMES).join(", ")}`, "format");
  const detect = (raw.detect ?? {}) as Raw;
  const list = (v: unknown, key: string): string[] | undefined =>
    v === undefined ? undefined : Array.isArray(v) && v.every((x) => typeof x === "string") ? (v as string[]) : bad("must be a list of strings", key);

  const params = new Map(base?.params.map((p) => [p.pattern, p]));
  for (const [pattern, value] of Object.entries((raw.params ?? {}) as Raw))
    params.set(pattern, { pattern, ...compilePattern(pattern), rule: tensorRule(value, `params.${pattern}`, bad) });
  if (!params.size) bad("maps no parameters", "params");

  return {
    name,
    file,
    description: typeof raw.description === "string" ? raw.description : (base?.description ?? ""),
    format: format as CheckpointFormat,
    detect: { architectures: list(detect.architectures, "detect.architectures"), metadata: list(detect.metadata, "detect.metadata") },
    import: raw.import === undefined ? base?.import : importSpec(raw.import, bad),
    params: [...params.values()],
    ignore: raw.ignore === undefined ? (base?.ignore ?? []) : list(raw.ignore, "ignore")!.map(globRegex),
  };
}

function tensorRule(v: unknown, key: string, bad: (why: string, key?: string) => never): TensorRule {
  if (typeof v === "string") return { tensors: [v], optional: false };
  if (Array.isArray(v) && v.length && v.every((x) => typeof x === "string")) return { tensors: v, optional: false };
  if (v === null || typeof v !== "object" || Array.isArray(v))
    return bad("must be a tensor name, a list of them, or { tensor, transform, heads, optional }", key);
  const o = v as Raw;
  const tensors =
    typeof o.tensor === "string"
      ? [o.tensor]
      : Array.isArray(o.tensor) && o.tensor.length && o.tensor.every((x) => typeof x === "string")
        ? (o.tensor as string[])
        : bad("`tensor` must be a name or a list of names", key);
  if (o.transform !== undefined && !(TRANSFORMS as readonly unknown[]).includes(o.transform))
    bad(`unknown transform ${JSON.stringify(o.transform)}; known: ${TRANSFORMS.join(", ")}`, key);
  if (o.transform === "rope-interleaved-to-half" && typeof o.heads !== "string")
    bad("rope-interleaved-to-half needs `heads`: the block argument with the number of heads", key);
  return { tensors, transform: o.transform as TransformName | undefined, heads: o.heads as string | undefined, optional: o.optional === true };
}

function importSpec(v: unknown, bad: (why: string, key?: string) => never): ImportSpec {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return bad("must be an object", "import");
  const o = v as Raw;
  for (const k of ["file", "block", "instance", "forward"]) if (typeof o[k] !== "string") bad("must be a string", `import.${k}`);
  const args: Record<string, { key: string; default?: ArgValue }> = {};
  for (const [arg, spec] of Object.entries((o.arguments ?? {}) as Raw)) {
    if (typeof spec === "string") args[arg] = { key: spec };
    else if (spec && typeof spec === "object" && typeof (spec as Raw).key === "string") args[arg] = spec as { key: string; default?: ArgValue };
    else bad("must be a config key or { key, default }", `import.arguments.${arg}`);
  }
  return {
    file: o.file as string,
    block: o.block as string,
    instance: o.instance as string,
    config: o.config as string | undefined,
    arguments: args,
    fixed: (o.fixed ?? {}) as Record<string, ArgValue>,
    forward: o.forward as string,
  };
}

let loaded: Map<string, Family> | undefined;

/** Every family of the std library, by name. */
export function families(): ReadonlyMap<string, Family> {
  loaded ??= new Map(
    readdirSync(FAMILIES_DIR)
      .filter((f) => f.endsWith(".json"))
      .sort()
      .map((f) => f.slice(0, -".json".length))
      .map((n) => [n, parseFamily(n)]),
  );
  return loaded;
}

export function familyNames(): string[] {
  return [...families().keys()];
}

/** Whether a family's names can be looked up in a checkpoint of this format. */
export function readsFormat(f: Family, format: CheckpointFormat): boolean {
  return f.format === "llama2c" ? format === "llama2c" : format !== "llama2c";
}

/** The family a checkpoint belongs to, from its format, config.json's `architectures` or its metadata. */
export function detectFamily(c: Catalog): Family {
  const archs = Array.isArray(c.config.architectures) ? (c.config.architectures as unknown[]).filter((a): a is string => typeof a === "string") : [];
  const all = [...families().values()];
  const hit = all.find((f) => {
    if (c.format === "llama2c") return f.format === "llama2c";
    if (f.detect.architectures) return c.format === "hf" && archs.some((a) => f.detect.architectures!.includes(a));
    if (f.detect.metadata) return f.detect.metadata.every((k) => k in c.metadata);
    return false;
  });
  if (hit) return hit;
  if (c.format === "hf") {
    const known = all
      .filter((f) => f.detect.architectures)
      .map((f) => `${f.name} (${f.detect.architectures!.join(", ")})`)
      .join("; ");
    throw new WeightsError(
      c.configFile,
      archs.length
        ? `architecture ${archs.join(", ")} is not one dehvf can import; known: ${known}`
        : `has no \`architectures\`, so the checkpoint family is unknown; name it with \`as FAMILY\` (${familyNames().join(", ")})`,
      "architectures",
    );
  }
  throw new WeightsError(c.path, `cannot tell which checkpoint family this is; name it with \`as FAMILY\` (${familyNames().join(", ")})`);
}

/** The rule for a parameter path (relative to the sourced instance) and the values of its pattern variables. */
export function ruleFor(f: Family, path: string): { rule: TensorRule; vars: Record<string, string> } | undefined {
  for (const p of f.params) {
    const m = p.regex.exec(path);
    if (m) return { rule: p.rule, vars: Object.fromEntries(p.vars.map((v, i) => [v, m[i + 1]])) };
  }
  return undefined;
}

/** `pattern` with {name} replaced from `vars` (unknown names stay as written). */
export function fillPattern(pattern: string, vars: Readonly<Record<string, string>>): string {
  return pattern.replace(/\{(\w+)\}/g, (all, v: string) => vars[v] ?? all);
}
