import { UserFacingError } from "../util/user-facing-error.ts";
import { excerpt } from "./excerpt.ts";
import { printable, shorten } from "./printable.ts";
import type { SourceFile, Span } from "./source.ts";

/** Which phase found a problem: users can tell a typo from a shape bug at a glance. */
export type Phase = "syntax" | "import" | "link" | "type" | "shape" | "input";

export interface Diagnostic {
  readonly phase: Phase;
  readonly message: string;
  readonly span?: Span;
  readonly hint?: string;
  /** context added as the error travels outwards ("in `language.layer.0.attn`, called at ...") */
  notes?: string[];
}

/** A failure the user can act on that has no source location (missing data, a diverged run): shown without a stack. */
export class UserError extends UserFacingError {
  override name = "UserError";
}

/** Thrown by any stage; carries one or more located diagnostics. */
export class DehvfError extends Error {
  /** the texts the spans point into, once known (attached by the loader) */
  sources: SourceMap | undefined;
  constructor(readonly diagnostics: readonly Diagnostic[]) {
    super(diagnostics.map((d) => d.message).join("\n"));
    this.name = "DehvfError";
  }
  /** adds context to the first diagnostic, innermost first */
  addNote(note: string, max = 8): this {
    const d = this.diagnostics[0];
    if (d) {
      d.notes ??= [];
      if (d.notes.length < max) d.notes.push(note);
    }
    return this;
  }
  withSources(sources: SourceMap): this {
    this.sources ??= sources;
    return this;
  }
  render(): string {
    return renderAll(this.diagnostics, this.sources ?? new Map());
  }
}

export function fail(phase: Phase, message: string, span?: Span, hint?: string): never {
  throw new DehvfError([{ phase, message, span, hint }]);
}

/** Sources by path, so a diagnostic can be rendered with its line. */
export type SourceMap = ReadonlyMap<string, SourceFile>;

/**
 * Renders like rustc: message, `--> file:line:col`, the source line and carets under
 * the span (clipped to the first line of a multi-line span). Everything that can come
 * from a model file (its text, names quoted in messages, its path) is shown through
 * `shown`, so a model file cannot send escape sequences to the user's terminal, and a
 * message quoting a megabyte-long name stays readable.
 */
export function renderDiagnostic(d: Diagnostic, sources: SourceMap): string {
  const shown = (s: string) => printable(shorten(s, 500));
  const out = [`error[${d.phase}]: ${shown(d.message)}`];
  const src = d.span ? sources.get(d.span.file) : undefined;
  const file = d.span && printable(d.span.file);
  if (d.span && src) {
    const { line, col } = src.position(d.span.start);
    const text = src.lineText(line);
    const end = src.position(Math.max(d.span.start, d.span.end - 1));
    const source = excerpt(text, col, end.line === line ? end.col + 1 : text.length + 1);
    const gutter = String(line).length;
    out.push(`${" ".repeat(gutter)}--> ${file}:${line}:${col}`);
    out.push(`${" ".repeat(gutter)} |`);
    out.push(`${line} | ${source.text}`);
    out.push(`${" ".repeat(gutter)} | ${source.marker}`);
  } else if (d.span) {
    out.push(`  --> ${file}`);
  }
  if (d.hint) out.push(`  = help: ${shown(d.hint)}`);
  for (const n of d.notes ?? []) out.push(`  = note: ${shown(n)}`);
  return out.join("\n");
}

/** Diagnostics rendered in full: each file stops at MAX_ERRORS syntax errors, but a program has several files. */
const MAX_RENDERED = 100;

export function renderAll(diags: readonly Diagnostic[], sources: SourceMap): string {
  const n = diags.length;
  const rendered = diags.slice(0, MAX_RENDERED).map((d) => renderDiagnostic(d, sources));
  if (n > MAX_RENDERED) rendered.push(`… and ${n - MAX_RENDERED} more not shown`);
  return `${rendered.join("\n\n")}\n\n${n} error${n === 1 ? "" : "s"}`;
}

/** Damerau-free Levenshtein distance; names are short, so O(nm) is fine. */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

/** Longer names get no suggestion: edit distance is quadratic, and a generated file can have megabyte names. */
const MAX_SUGGESTED_LENGTH = 100;

/** The closest candidate within a third of the name's length (at least 1 edit), if any. */
export function nearestName(name: string, candidates: Iterable<string>): string | undefined {
  if (name.length > MAX_SUGGESTED_LENGTH) return undefined;
  let best: string | undefined;
  let bestDist = Math.max(1, Math.floor(name.length / 3)) + 1;
  for (const c of candidates) {
    // the distance is at least the difference in length
    if (c === name || Math.abs(c.length - name.length) >= bestDist) continue;
    const d = editDistance(name.toLowerCase(), c.toLowerCase());
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}

export function didYouMean(name: string, candidates: Iterable<string>): string | undefined {
  const near = nearestName(name, candidates);
  return near === undefined ? undefined : `did you mean \`${near}\`?`;
}
