/** A loaded .dehvf text with a line index, so any offset maps to line:col. */
export interface Span {
  readonly file: string;
  readonly start: number; // offset, inclusive
  readonly end: number; // offset, exclusive
}

/** Editors that save "UTF-8 with BOM" put U+FEFF first; it is not part of the program. */
const BOM = "\uFEFF";

/** `\n`, `\r\n` and a lone `\r` (classic Mac OS) each end a line, as in every editor. */
const LINE_END = /\r\n?|\n/g;

export class SourceFile {
  /** the file's text without a leading byte-order mark: every offset points into this */
  readonly text: string;
  private readonly lineStarts: number[] = [0];
  constructor(
    readonly path: string,
    text: string,
  ) {
    this.text = text.startsWith(BOM) ? text.slice(BOM.length) : text;
    for (const m of this.text.matchAll(LINE_END)) this.lineStarts.push(m.index + m[0].length);
  }

  /** 1-based line and column of an offset. */
  position(offset: number): { line: number; col: number } {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: offset - this.lineStarts[lo] + 1 };
  }

  /** The text of a 1-based line, without its line ending. */
  lineText(line: number): string {
    const start = this.lineStarts[line - 1] ?? this.text.length;
    const next = this.lineStarts[line] ?? this.text.length;
    return this.text.slice(start, next).replace(/\r?\n?$/, "");
  }

  span(start: number, end: number): Span {
    return { file: this.path, start, end: Math.max(end, start) };
  }
}
