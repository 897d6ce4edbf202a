import type { IRecognitionException, IToken, TokenType } from "chevrotain";
import { EOF } from "chevrotain";
import type { Diagnostic } from "./diagnostics.ts";
import { shorten } from "./printable.ts";
import type { SourceFile } from "./source.ts";
import { allTokens } from "./tokens.ts";

const describeKind: Record<string, string> = {
  Identifier: "a name",
  Integer: "an integer",
  Float: "a number",
  StringLit: "a string",
  Transpose: "`^T`",
};

function describeTokenType(name: string): string {
  if (describeKind[name]) return describeKind[name];
  const t = allTokens.find((x) => x.name === name);
  const src = t?.PATTERN instanceof RegExp ? t.PATTERN.source.replace(/\\b$/, "").replace(/\\/g, "") : name;
  return `\`${src}\``;
}

function describeFound(t: IToken): string {
  return t.tokenType === EOF ? "end of file" : `\`${shorten(t.image)}\``;
}

const ruleWords: Record<string, string> = {
  blockDecl: "a block",
  paramDecl: "a param declaration",
  instanceDecl: "a sub-block declaration",
  fusionDecl: "a fusion",
  forwardDecl: "a forward",
  fwdParam: "a forward parameter",
  tensorType: "a tensor type",
  stmt: "a statement",
  callArgs: "call arguments",
  importDecl: "an import",
  trainDecl: "a train section",
  blockParam: "a block parameter",
  siteExpr: "a site",
  ifExpr: "an if expression",
  indexItem: "an index",
};

/** Turns Chevrotain's exceptions into short located messages ("expected `)`, found `{`"). */
export function syntaxDiagnostic(e: IRecognitionException & { previousToken?: IToken }, src: SourceFile): Diagnostic {
  const tok = e.token;
  const atEof = tok.tokenType === EOF || Number.isNaN(tok.startOffset);
  const anchor = atEof ? (e.previousToken && !Number.isNaN(e.previousToken.startOffset) ? e.previousToken : undefined) : tok;
  // At end of file, point just past the last token, clamped: the text may end right there.
  const past = (o: number) => Math.min(o, src.text.length);
  const span = anchor
    ? atEof
      ? src.span(past(anchor.endOffset! + 1), past(anchor.endOffset! + 2))
      : src.span(anchor.startOffset, anchor.endOffset! + 1)
    : src.span(Math.max(0, src.text.length - 1), src.text.length);
  const names = [...new Set([...e.message.matchAll(/(?:-->\s*|\[)(\w+)/g)].map((m) => m[1]))].filter((n) => allTokens.some((t: TokenType) => t.name === n));
  const expected = names.slice(0, 6).map(describeTokenType);
  const rule = [...e.context.ruleStack].reverse().find((r) => ruleWords[r]);
  const where = rule ? ` in ${ruleWords[rule]}` : "";
  const found = describeFound(tok);
  let message: string;
  if (e.name === "NotAllInputParsedException") message = `unexpected ${found}: expected \`import\`, \`block\`, \`model\` or \`train\``;
  else if (expected.length === 1) message = `expected ${expected[0]}${where}, found ${found}`;
  else if (expected.length > 1) message = `unexpected ${found}${where}; expected one of ${expected.join(", ")}`;
  else message = `unexpected ${found}${where}`;
  return { phase: "syntax", message, span };
}
