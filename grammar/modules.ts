import { existsSync, statSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BlockDecl, FileAst, ImportDecl } from "./ast.ts";
import { cstToAst } from "./cst-to-ast.ts";
import { type Diagnostic, DehvfError } from "./diagnostics.ts";
import { MAX_ERRORS } from "./limits.ts";
import { parseText } from "./parser.ts";
import { readSource } from "./read-source.ts";
import { SourceFile } from "./source.ts";
import { syntaxDiagnostic } from "./syntax-errors.ts";

/** `import "std/vit.dehvf"` falls back to this folder: the shipped model library. */
export const MODELS_ROOT = fileURLToPath(new URL("../models/", import.meta.url));

export interface Program {
  readonly entry: FileAst;
  readonly files: ReadonlyMap<string, FileAst>;
  readonly sources: ReadonlyMap<string, SourceFile>;
  /** every block and model by name, across the entry file and its imports */
  readonly decls: ReadonlyMap<string, BlockDecl>;
}

/** Paths in diagnostics are relative to the working directory when that is shorter. */
function displayPath(abs: string): string {
  const rel = relative(process.cwd(), abs);
  return rel.length < abs.length && !rel.startsWith("..") ? rel : abs;
}

export function parseSource(src: SourceFile): { ast?: FileAst; diagnostics: Diagnostic[] } {
  const out = parseText(src.text);
  const diagnostics: Diagnostic[] = out.lexErrors.slice(0, MAX_ERRORS).map((e) => {
    // the whole character, not half of a surrogate pair
    const ch = String.fromCodePoint(src.text.codePointAt(e.offset)!);
    // A lone `"` can only be a string the lexer could not close on its line.
    return ch === '"'
      ? { phase: "syntax" as const, message: "unterminated string", span: src.span(e.offset, e.offset + 1), hint: 'close it with `"` on the same line' }
      : { phase: "syntax" as const, message: `unexpected character \`${ch}\``, span: src.span(e.offset, e.offset + Math.max(1, e.length)) };
  });
  for (const e of out.parseErrors) diagnostics.push(syntaxDiagnostic(e, src));
  if (out.limit) diagnostics.push({ phase: "syntax", message: out.limit.message, span: src.span(out.limit.start, out.limit.end), hint: out.limit.hint });
  if (diagnostics.length || !out.cst) return { diagnostics };
  try {
    return { ast: cstToAst(out.cst, src), diagnostics };
  } catch (err) {
    // cst-to-ast rejects what the grammar cannot (bad string escapes), with a span.
    if (err instanceof DehvfError) return { diagnostics: [...err.diagnostics] };
    throw err;
  }
}

/**
 * Loads a file and everything it imports (depth first), reporting syntax errors of
 * every file, missing files and import cycles together.
 */
export function loadProgram(entryPath: string): Program {
  const files = new Map<string, FileAst>();
  const sources = new Map<string, SourceFile>();
  const diagnostics: Diagnostic[] = [];
  /** files after everything they import: a clash is reported at the later (importing) definition */
  const importsFirst: FileAst[] = [];

  /** A candidate that is a file wins; one that exists but is not (a directory) is still read, to say why it cannot be used. */
  const resolveImport = (from: string, imp: ImportDecl): string | undefined => {
    const candidates = [resolve(dirname(from), imp.path), resolve(MODELS_ROOT, imp.path)];
    const hit = candidates.find((c) => existsSync(c) && statSync(c).isFile()) ?? candidates.find((c) => existsSync(c));
    if (!hit)
      diagnostics.push({
        phase: "import",
        message: `cannot find imported file ${JSON.stringify(imp.path)}`,
        span: imp.span,
        hint: `looked in ${candidates.map(displayPath).join(" and ")}`,
      });
    return hit;
  };

  // The import chain being followed, as an explicit stack: a generated chain of
  // thousands of files must not exhaust the JS stack.
  const chain: { abs: string; ast: FileAst; nextImport: number }[] = [];
  const onChain = new Set<string>();

  const enter = (abs: string, via?: ImportDecl): void => {
    const shown = displayPath(abs);
    if (onChain.has(abs)) {
      const cycle = [...chain.slice(chain.findIndex((f) => f.abs === abs)).map((f) => f.abs), abs].map(displayPath).join(" → ");
      diagnostics.push({ phase: "import", message: `import cycle: ${cycle}`, span: via?.span });
      return;
    }
    if (files.has(abs) || sources.has(shown)) return;
    const read = readSource(abs, shown);
    if ("problem" in read) {
      diagnostics.push({ phase: via ? "import" : "input", message: read.problem, span: via?.span });
      return;
    }
    const src = new SourceFile(shown, read.text);
    sources.set(shown, src);
    const { ast, diagnostics: ds } = parseSource(src);
    for (const d of ds) diagnostics.push(d); // not push(...ds): a binary file has more errors than a call takes arguments
    if (!ast) return;
    files.set(abs, ast);
    chain.push({ abs, ast, nextImport: 0 });
    onChain.add(abs);
  };

  const entryAbs = resolve(entryPath);
  enter(entryAbs);
  while (chain.length) {
    const top = chain[chain.length - 1];
    const imp = top.ast.imports[top.nextImport++];
    if (imp) {
      const target = resolveImport(top.abs, imp);
      if (target) enter(target, imp);
    } else {
      chain.pop();
      onChain.delete(top.abs);
      importsFirst.push(top.ast);
    }
  }

  const decls = new Map<string, BlockDecl>();
  for (const ast of importsFirst)
    for (const d of ast.decls) {
      const prev = decls.get(d.name.name);
      if (prev) {
        const p = sources.get(prev.span.file)!.position(prev.span.start);
        diagnostics.push({
          phase: "link",
          message: `\`${d.name.name}\` is defined twice`,
          span: d.name.span,
          hint: `first defined at ${prev.span.file}:${p.line}:${p.col}`,
        });
      } else decls.set(d.name.name, d);
    }

  if (diagnostics.length) throw new DehvfError(diagnostics).withSources(sources);
  return { entry: files.get(entryAbs)!, files, sources, decls };
}
