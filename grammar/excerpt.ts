import { printable } from "./printable.ts";

/** Columns of source shown under a diagnostic; a longer line is cut to a window around the caret. */
const SHOWN_WIDTH = 100;
/** Columns of context kept before the caret when the line is cut. */
const CONTEXT_BEFORE = 30;

export interface Excerpt {
  /** the line as shown: escaped, and cut with `…` where it goes on */
  readonly text: string;
  /** spaces (tabs under tabs) then carets, aligned under `text` */
  readonly marker: string;
}

/**
 * The source line of a diagnostic and the carets under columns [startCol, endCol)
 * (1-based, UTF-16 like SourceFile's). Unprintable characters are shown escaped, so the
 * carets count the escapes' width; only a window of about SHOWN_WIDTH columns is shown,
 * so a 100 KB line does not flood the terminal and the caret stays on screen.
 */
export function excerpt(line: string, startCol: number, endCol: number): Excerpt {
  // Every character shows at least one column wide, so SHOWN_WIDTH characters either
  // side of the span are all the window can need: a huge line is never processed whole.
  const lo = codePointStart(line, Math.max(0, startCol - 1 - SHOWN_WIDTH));
  const hi = codePointStart(line, Math.min(line.length, endCol - 1 + SHOWN_WIDTH));
  const shown = Array.from(line.slice(lo, hi), printable);
  const first = Array.from(line.slice(lo, startCol - 1)).length;
  const last = Math.max(first + 1, Array.from(line.slice(lo, endCol - 1)).length);

  let from = first;
  let to = first;
  let width = 0;
  const fits = (piece: string, room: number) => width + piece.length <= room;
  while (from > 0 && fits(shown[from - 1], CONTEXT_BEFORE)) width += shown[--from].length;
  while (to < shown.length && fits(shown[to], SHOWN_WIDTH)) width += shown[to++].length;
  while (from > 0 && fits(shown[from - 1], SHOWN_WIDTH)) width += shown[--from].length;

  const cutBefore = lo + from > 0;
  const cutAfter = hi < line.length || to < shown.length;
  const pad = shown.slice(from, first).map((p) => (p === "\t" ? "\t" : " ".repeat(p.length)));
  const carets = shown.slice(first, Math.min(last, to)).reduce((n, p) => n + p.length, 0);
  return {
    text: `${cutBefore ? "…" : ""}${shown.slice(from, to).join("")}${cutAfter ? "…" : ""}`,
    marker: `${cutBefore ? " " : ""}${pad.join("")}${"^".repeat(Math.max(1, carets))}`,
  };
}

/** `i`, moved back off the second half of a surrogate pair so a slice there keeps whole characters. */
function codePointStart(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return i > 0 && c >= 0xdc00 && c <= 0xdfff ? i - 1 : i;
}
