import { existsSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import type * as A from "../grammar/ast.ts";
import { type Diagnostic, didYouMean, fail } from "../grammar/diagnostics.ts";
import type { Span } from "../grammar/source.ts";
import { type Catalog, FORMAT_NAMES, openCatalog } from "../io/checkpoints/catalog.ts";
import { detectFamily, type Family, families, familyNames, fillPattern, readsFormat, ruleFor, type TensorRule } from "../io/checkpoints/families.ts";
import { shapeProblem, type Transform } from "../io/checkpoints/transforms.ts";
import { describeSystemError } from "../io/errno.ts";
import { UserFacingError } from "../util/user-facing-error.ts";
import type { ParamSource } from "../io/checkpoints/param-source.ts";
import type { Value } from "./values.ts";

/** dtypes a checkpoint tensor may have: all are read as float32 */
export const READABLE_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64"];

/** A path written in a model file, resolved against that file's folder. */
export function besideFile(span: Span, path: string): string {
  return resolve(dirname(resolve(span.file)), path);
}

/** A path as messages show it: relative to the working directory when that is shorter. */
export function shownPath(abs: string): string {
  const rel = relative(process.cwd(), abs);
  return rel && rel.length < abs.length && !rel.startsWith("..") ? rel : abs;
}

/**
 * Link-time checks of a block's `from "..." as family` and `tokenizer "..."`
 * declarations: known families (with a suggestion), files that exist, one tokenizer, in a model.
 */
export function checkWeightDecls(decl: A.BlockDecl, report: (d: Diagnostic) => void): void {
  const err = (message: string, span: Span, hint?: string) => report({ phase: "link", message, span, hint });
  for (const m of decl.members) {
    if (m.kind !== "instance" || !m.source) continue;
    const { family, path, pathSpan } = m.source;
    if (family && !families().has(family.name))
      err(`unknown checkpoint family \`${family.name}\``, family.span, didYouMean(family.name, familyNames()) ?? `known: ${familyNames().join(", ")}`);
    const abs = besideFile(pathSpan, path);
    if (!existsSync(abs))
      err(`cannot find checkpoint ${JSON.stringify(path)}`, pathSpan, `looked for ${shownPath(abs)} (paths are relative to the model file)`);
  }
  const toks = decl.tokenizers ?? [];
  for (const [i, t] of toks.entries()) {
    if (decl.kind !== "model") err(`a tokenizer belongs in a \`model\`, not in block \`${decl.name.name}\``, t.span);
    else if (i > 0) err(`model \`${decl.name.name}\` declares a second tokenizer`, t.span, 'keep one `tokenizer "..."`');
    const abs = besideFile(t.pathSpan, t.path);
    if (!existsSync(abs))
      err(`cannot find tokenizer ${JSON.stringify(t.path)}`, t.pathSpan, `looked for ${shownPath(abs)} (paths are relative to the model file)`);
  }
}

/** A checkpoint problem found while elaborating, located at the `from "..."` that named it. */
function located<T>(span: Span, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof UserFacingError) fail("import", e.message, span);
    const sys = describeSystemError(e);
    if (sys) fail("import", sys, span);
    throw e;
  }
}

interface Active {
  /** the sourced instance's path in the model */
  readonly path: string;
  readonly block: string;
  readonly args: ReadonlyMap<string, Value>;
  readonly decl: A.WeightSourceDecl;
  readonly catalog: Catalog;
  readonly family: Family;
  readonly shown: string;
}

/**
 * The elaborator's view of `from "..."` declarations: while an instance that names a
 * checkpoint is being made, each parameter made inside it is resolved through the
 * family's table against the checkpoint's headers (names, shapes, dtypes; no data is read).
 * The innermost declaration wins.
 */
export class WeightSources {
  private readonly active: Active[] = [];

  /** Runs `make` (which instantiates `decl`'s block at `path`) with its checkpoint, if any, in force. */
  within<T>(decl: A.InstanceDecl, path: string, args: ReadonlyMap<string, Value>, make: () => T): T {
    const src = decl.source;
    if (!src) return make();
    const abs = besideFile(src.pathSpan, src.path);
    const catalog = located(src.pathSpan, () => openCatalog(abs));
    const shown = shownPath(abs);
    let family: Family;
    if (src.family) {
      const f = families().get(src.family.name);
      if (!f)
        return fail(
          "link",
          `unknown checkpoint family \`${src.family.name}\``,
          src.family.span,
          didYouMean(src.family.name, familyNames()) ?? `known: ${familyNames().join(", ")}`,
        );
      if (!readsFormat(f, catalog.format))
        fail("import", `\`as ${f.name}\` reads ${FORMAT_NAMES[f.format]}, but ${shown} is ${FORMAT_NAMES[catalog.format]}`, src.family.span);
      family = f;
    } else family = located(src.pathSpan, () => detectFamily(catalog));
    this.active.push({ path, block: decl.block.name, args, decl: src, catalog, family, shown });
    try {
      return make();
    } finally {
      this.active.pop();
    }
  }

  /** Where parameter `name` (its full path) of `shape` gets its value: a checkpoint tensor, or undefined for its init rule. */
  sourceOf(name: string, shape: readonly number[]): ParamSource | undefined {
    const a = this.active[this.active.length - 1];
    if (!a) return undefined;
    const span = a.decl.pathSpan;
    const rel = name.slice(a.path.length + 1);
    const hit = ruleFor(a.family, rel);
    if (!hit)
      return fail(
        "link",
        `parameter \`${rel}\` of \`${a.path}\` (${a.block}) has no entry in checkpoint family \`${a.family.name}\``,
        span,
        `its table, ${shownPath(a.family.file)}, maps ${a.family.params
          .map((p) => p.pattern)
          .slice(0, 6)
          .join(", ")}, …: is \`${a.block}\` the block it describes?`,
      );
    const vars = { path: rel, ...hit.vars, instance: a.path };
    const names = hit.rule.tensors.map((t) => fillPattern(t, vars));
    const i = names.findIndex((n) => a.catalog.tensors.has(n));
    if (i < 0) {
      if (hit.rule.optional) return undefined;
      const alt =
        names.length > 1
          ? ` (nor ${names
              .slice(1)
              .map((n) => JSON.stringify(n))
              .join(", ")})`
          : "";
      return fail(
        "import",
        `${a.shown} has no tensor ${JSON.stringify(names[0])}${alt} for parameter \`${name}\``,
        span,
        didYouMean(names[0], a.catalog.tensors.keys()) ?? `the table is ${shownPath(a.family.file)}`,
      );
    }
    const t = a.catalog.tensors.get(names[i])!;
    if (!READABLE_DTYPES.includes(t.dtype))
      fail("import", `${shownPath(t.file)} stores tensor ${JSON.stringify(t.name)} as ${t.dtype}; dehvf reads ${READABLE_DTYPES.join(", ")}`, span);
    const transform = this.transform(hit.rule, a);
    const problem = shapeProblem(transform, t.shape, shape);
    if (problem)
      fail(
        "shape",
        `${shownPath(t.file)}: tensor ${JSON.stringify(t.name)} ${problem} (\`${name}\`)`,
        span,
        transform ? `transform: ${transform.kind}` : undefined,
      );
    // the pattern keeps index variables ({l}): the same text for every copy of a repeat
    const pattern = fillPattern(hit.rule.tensors[i], { instance: a.path, ...(hit.vars.path === undefined ? {} : { path: rel }) });
    return { file: a.catalog.path, written: a.decl.path, family: a.family.name, tensor: t.name, pattern, transform };
  }

  private transform(rule: TensorRule, a: Active): Transform | undefined {
    if (!rule.transform) return undefined;
    if (rule.transform !== "rope-interleaved-to-half") return { kind: rule.transform };
    const v = a.args.get(rule.heads!);
    if (v?.kind !== "int" || typeof v.value !== "number")
      return fail(
        "link",
        `checkpoint family \`${a.family.name}\` reads the head count from argument \`${rule.heads}\`, which \`${a.block}\` does not have as an int`,
        a.decl.pathSpan,
        `its table is ${shownPath(a.family.file)}`,
      );
    return { kind: rule.transform, heads: v.value };
  }
}
