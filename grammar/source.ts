/** A loaded .dehvf text with a line index, so any offset maps to line:col. */
export interface Span {
  readonly file: string;
  readonly start: number; // offset, inclusive
  readonly end: number; // offset, exclusive
}

export class SourceFile {
  private readonly lineStarts: number[] = [0];
  constructor(
    readonly path: string,
    readonly text: string,
  ) {
    for (let i = 0; i < text.length; i++) if (text[i] === "\n") this.lineStarts.push(i + 1);
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

  lineText(line: number): string {
    const start = this.lineStarts[line - 1] ?? this.text.length;
    const next = this.lineStarts[line];
    return this.text.slice(start, next === undefined ? this.text.length : next - 1).replace(/\r$/, "");
  }

  span(start: number, end: number): Span {
    return { file: this.path, start, end: Math.max(end, start) };
  }
}
