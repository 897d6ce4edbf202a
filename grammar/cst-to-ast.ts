import type { CstNode, IToken } from "chevrotain";
import type * as A from "./ast.ts";
import { fail } from "./diagnostics.ts";
import { shorten } from "./printable.ts";
import type { SourceFile, Span } from "./source.ts";

/**
 * Turns an error-free CST into the AST. Every node gets the span of its text; labels
 * come from parser.ts.
 */
export function cstToAst(cst: CstNode, src: SourceFile): A.FileAst {
  const b = new AstBuilder(src);
  return b.file(cst);
}

const ESCAPES = new Map([
  ['"', '"'],
  ["\\", "\\"],
  ["/", "/"],
  ["b", "\b"],
  ["f", "\f"],
  ["n", "\n"],
  ["r", "\r"],
  ["t", "\t"],
]);

class AstBuilder {
  constructor(private readonly src: SourceFile) {}

  private nodeSpan(n: CstNode): Span {
    const loc = n.location!;
    return this.src.span(loc.startOffset, (loc.endOffset ?? loc.startOffset) + 1);
  }
  private tokSpan(t: IToken): Span {
    return this.src.span(t.startOffset, (t.endOffset ?? t.startOffset) + 1);
  }
  private join(a: Span, b: Span): Span {
    return this.src.span(Math.min(a.start, b.start), Math.max(a.end, b.end));
  }
  private nodes(n: CstNode, key: string): CstNode[] {
    return (n.children[key] ?? []) as CstNode[];
  }
  private node(n: CstNode, key: string): CstNode {
    return this.nodes(n, key)[0];
  }
  private tokens(n: CstNode, key: string): IToken[] {
    return (n.children[key] ?? []) as IToken[];
  }
  private token(n: CstNode, key: string): IToken | undefined {
    return this.tokens(n, key)[0];
  }
  private ident(t: IToken): A.Ident {
    return { name: t.image, span: this.tokSpan(t) };
  }

  /**
   * Decodes JSON-style escapes by hand: the lexer accepts any `\x` (and raw tabs),
   * which JSON.parse would reject with an unlocated exception.
   */
  private string(t: IToken): string {
    const s = t.image;
    let out = "";
    for (let i = 1; i < s.length - 1; i++) {
      if (s[i] !== "\\") {
        out += s[i];
        continue;
      }
      const e = s[i + 1];
      const hex = s.slice(i + 2, i + 6);
      if (e === "u" && /^[0-9a-fA-F]{4}$/.test(hex)) {
        out += String.fromCharCode(parseInt(hex, 16));
        i += 5;
        continue;
      }
      const c = ESCAPES.get(e);
      if (c === undefined)
        fail("syntax", `invalid escape \`\\${e}\` in a string`, this.src.span(t.startOffset + i, t.startOffset + i + 2), 'use \\" \\\\ \\n \\t or \\uXXXX');
      out += c;
      i++;
    }
    return out;
  }

  /** Ints are exact: a literal a double cannot hold exactly is refused, not rounded. */
  private integer(t: IToken): number {
    const value = Number(t.image);
    if (!Number.isSafeInteger(value))
      fail(
        "syntax",
        `integer ${shorten(t.image)} is larger than ${Number.MAX_SAFE_INTEGER} (2^53 - 1), the largest exact integer`,
        this.tokSpan(t),
        "write it as a float (e.g. `1e16`) if an approximate value is meant",
      );
    return value;
  }

  file(n: CstNode): A.FileAst {
    const imports = this.nodes(n, "importDecl").map(
      (c): A.ImportDecl => ({
        kind: "import",
        path: this.string(this.token(c, "StringLit")!),
        span: this.nodeSpan(c),
      }),
    );
    const decls = this.nodes(n, "blockDecl").map((c) => this.blockDecl(c));
    const train = this.nodes(n, "trainDecl").map((c) => this.trainDecl(c));
    // Keep declaration order stable by source position (the CST groups by kind).
    decls.sort((x, y) => x.span.start - y.span.start);
    return { path: this.src.path, imports, decls, train };
  }

  blockDecl(n: CstNode): A.BlockDecl {
    const kw = this.token(n, "keyword")!;
    return {
      kind: kw.image === "model" ? "model" : "block",
      name: this.ident(this.token(n, "name")!),
      params: this.nodes(n, "blockParam").map((p) => {
        const type = this.token(p, "type")!;
        const def = this.nodes(p, "default")[0];
        return {
          name: this.ident(this.token(p, "name")!),
          type: this.ident(type),
          default: def ? this.expr(def) : undefined,
          span: this.nodeSpan(p),
        };
      }),
      members: this.nodes(n, "member")
        .filter((m) => !m.children.tokenizerDecl && !m.children.preprocessDecl)
        .map((m) => this.member(m))
        .sort((x, y) => x.span.start - y.span.start),
      tokenizers: this.nodes(n, "member")
        .flatMap((m) => this.nodes(m, "tokenizerDecl"))
        .map((t) => {
          const path = this.token(t, "StringLit")!;
          return { path: this.string(path), pathSpan: this.tokSpan(path), span: this.nodeSpan(t) };
        }),
      preprocess: this.nodes(n, "member")
        .flatMap((m) => this.nodes(m, "preprocessDecl"))
        .map((p) => ({ args: this.callArgs(this.node(p, "callArgs")), span: this.nodeSpan(p) })),
      span: this.nodeSpan(n),
    };
  }

  /** `from "path" [as family]` of an instance declaration, if any. */
  private weightSource(c: CstNode): A.WeightSourceDecl | undefined {
    const path = this.token(c, "from");
    if (!path) return undefined;
    const parts = this.tokens(c, "family").sort((a, b) => a.startOffset - b.startOffset);
    const from = this.token(c, "From")!;
    const last = parts[parts.length - 1];
    let family: A.Ident | undefined;
    if (parts.length) {
      const span = this.join(this.tokSpan(parts[0]), this.tokSpan(last));
      if (parts.some((t, i) => i > 0 && t.startOffset !== parts[i - 1].endOffset! + 1))
        fail("syntax", "a checkpoint family name has no spaces", span, "write it like `hf-llama`");
      family = { name: parts.map((t) => t.image).join(""), span };
    }
    return { path: this.string(path), pathSpan: this.tokSpan(path), family, span: this.join(this.tokSpan(from), this.tokSpan(last ?? path)) };
  }

  member(n: CstNode): A.Member {
    const [key] = Object.keys(n.children);
    const c = this.node(n, key);
    switch (key) {
      case "paramDecl": {
        const init = this.token(c, "init");
        const args = this.nodes(c, "callArgs")[0];
        const when = this.nodes(c, "when")[0];
        return {
          kind: "param",
          name: this.ident(this.token(c, "name")!),
          shape: this.exprList(this.node(c, "shape")),
          init: init
            ? {
                name: this.ident(init),
                args: args ? this.callArgs(args) : [],
                span: args ? this.join(this.tokSpan(init), this.nodeSpan(args)) : this.tokSpan(init),
              }
            : undefined,
          frozen: this.tokens(c, "Frozen").length > 0,
          when: when ? this.expr(when) : undefined,
          span: this.nodeSpan(c),
        };
      }
      case "instanceDecl": {
        const rep = this.nodes(c, "repeat")[0];
        const when = this.nodes(c, "when")[0];
        return {
          kind: "instance",
          name: this.ident(this.token(c, "name")!),
          repeat: rep ? this.expr(rep) : undefined,
          block: this.ident(this.token(c, "block")!),
          args: this.callArgs(this.node(c, "callArgs")),
          frozen: this.tokens(c, "Frozen").length > 0,
          source: this.weightSource(c),
          when: when ? this.expr(when) : undefined,
          span: this.nodeSpan(c),
        };
      }
      case "fusionDecl":
        return {
          kind: "fusion",
          name: this.ident(this.token(c, "name")!),
          block: this.ident(this.token(c, "block")!),
          args: this.callArgs(this.node(c, "callArgs")),
          each: this.tokens(c, "Each").length > 0,
          clauses: this.nodes(c, "fusionClause").map((cl) => ({
            name: this.ident(this.token(cl, "name")!),
            value: this.expr(this.node(cl, "expr")),
            span: this.nodeSpan(cl),
          })),
          span: this.nodeSpan(c),
        };
      case "forwardDecl": {
        const result = this.nodes(c, "result")[0];
        const single = this.nodes(c, "expr")[0];
        const body: A.Stmt[] = single
          ? [{ kind: "return", value: this.expr(single), span: this.nodeSpan(single) }]
          : this.nodes(c, "stmt").map((s) => this.stmt(s));
        return {
          kind: "forward",
          params: this.nodes(c, "fwdParam").map((p) => this.fwdParam(p)),
          result: result ? this.tensorType(result) : undefined,
          body,
          span: this.nodeSpan(c),
        };
      }
      default:
        throw new Error(`internal: unknown member ${key}`);
    }
  }

  fwdParam(n: CstNode): A.FwdParam {
    const tt = this.nodes(n, "tensorType")[0];
    const scalar = this.token(n, "scalar");
    return {
      name: this.ident(this.token(n, "name")!),
      type: tt ? { kind: "tensor", type: this.tensorType(tt) } : { kind: "scalar", type: this.ident(scalar!), span: this.tokSpan(scalar!) },
      span: this.nodeSpan(n),
    };
  }

  tensorType(n: CstNode): A.TensorType {
    const dtype = this.token(n, "dtype");
    return {
      dims: this.nodes(n, "dimPattern").map((d): A.DimPattern => {
        const e = this.nodes(d, "expr")[0];
        return e ? { kind: "dim", expr: this.expr(e), span: this.nodeSpan(d) } : { kind: "ellipsis", span: this.nodeSpan(d) };
      }),
      dtypeName: dtype ? this.ident(dtype) : undefined,
      span: this.nodeSpan(n),
    };
  }

  stmt(n: CstNode): A.Stmt {
    const kw = this.token(n, "keyword");
    const value = this.expr(this.node(n, "expr"));
    const span = this.nodeSpan(n);
    if (!kw) return { kind: "expr", value, span };
    if (kw.image === "return") return { kind: "return", value, span };
    return { kind: kw.image === "tap" ? "tap" : "let", name: this.ident(this.token(n, "name")!), value, span };
  }

  trainDecl(n: CstNode): A.TrainDecl {
    const name = this.token(n, "name");
    return {
      kind: "train",
      name: name ? this.ident(name) : undefined,
      entries: this.nodes(n, "trainEntry").map((e) => ({
        key: this.ident(this.token(e, "key")!),
        value: this.expr(this.node(e, "expr")),
        span: this.nodeSpan(e),
      })),
      span: this.nodeSpan(n),
    };
  }

  callArgs(n: CstNode): A.Arg[] {
    return this.nodes(n, "arg").map((a) => {
      const name = this.token(a, "name");
      return { name: name ? this.ident(name) : undefined, value: this.expr(this.node(a, "expr")), span: this.nodeSpan(a) };
    });
  }

  exprList(n: CstNode): A.Expr[] {
    return this.nodes(n, "expr").map((e) => this.expr(e));
  }

  // ---- expressions ----
  expr(n: CstNode): A.Expr {
    const ife = this.nodes(n, "ifExpr")[0];
    if (ife) {
      return {
        kind: "if",
        cond: this.expr(this.node(ife, "cond")),
        then: this.expr(this.node(ife, "then")),
        else: this.expr(this.node(ife, "else")),
        span: this.nodeSpan(ife),
      };
    }
    return this.binaryChain(this.node(n, "orExpr"));
  }

  /** orExpr/andExpr/cmpExpr/addExpr/mulExpr share one shape: operands and ops, left-associative. */
  private binaryChain(n: CstNode): A.Expr {
    const operands = this.nodes(n, "operands");
    const ops = this.tokens(n, "ops").sort((a, b) => a.startOffset - b.startOffset);
    const sub = (c: CstNode): A.Expr => (c.name === "unaryExpr" ? this.unary(c) : this.binaryChain(c));
    let acc = sub(operands[0]);
    for (let i = 0; i < ops.length; i++) {
      const right = sub(operands[i + 1]);
      acc = { kind: "binary", op: ops[i].image as A.BinaryOp, left: acc, right, span: this.join(acc.span, right.span) };
    }
    return acc;
  }

  private unary(n: CstNode): A.Expr {
    const op = this.token(n, "op");
    if (op) {
      const operand = this.unary(this.node(n, "operand"));
      return { kind: "unary", op: op.image as "-" | "not", operand, span: this.nodeSpan(n) };
    }
    return this.postfix(this.node(n, "postfixExpr"));
  }

  private postfix(n: CstNode): A.Expr {
    let acc = this.primary(this.node(n, "primary"));
    for (const op of this.nodes(n, "postfixOp")) {
      const span = this.join(acc.span, this.nodeSpan(op));
      const call = this.nodes(op, "callArgs")[0];
      if (call) acc = { kind: "call", callee: acc, args: this.callArgs(call), span };
      else if (this.tokens(op, "Transpose").length) acc = { kind: "transpose", operand: acc, span };
      else if (this.token(op, "member")) acc = { kind: "member", target: acc, member: this.ident(this.token(op, "member")!), span };
      else acc = { kind: "index", target: acc, items: this.nodes(op, "indexItem").map((i) => this.indexItem(i)), span };
    }
    return acc;
  }

  private indexItem(n: CstNode): A.IndexItem {
    const span = this.nodeSpan(n);
    if (this.tokens(n, "Star").length) return { kind: "all", span };
    if (this.tokens(n, "Ellipsis").length) return { kind: "ellipsis", span };
    const start = this.nodes(n, "start")[0];
    const end = this.nodes(n, "end")[0];
    if (this.tokens(n, "colon").length) return { kind: "slice", start: start ? this.expr(start) : undefined, end: end ? this.expr(end) : undefined, span };
    return { kind: "at", value: this.expr(start), span };
  }

  private primary(n: CstNode): A.Expr {
    const span = this.nodeSpan(n);
    const t = (k: string) => this.token(n, k);
    let tok: IToken | undefined;
    if ((tok = t("Integer"))) return { kind: "number", value: this.integer(tok), isInt: true, span };
    if ((tok = t("Float"))) return { kind: "number", value: Number(tok.image), isInt: false, span };
    if ((tok = t("StringLit"))) return { kind: "string", value: this.string(tok), span };
    if (t("True")) return { kind: "bool", value: true, span };
    if (t("False")) return { kind: "bool", value: false, span };
    if ((tok = t("Identifier"))) return { kind: "name", name: tok.image, span };
    const inner = this.nodes(n, "expr")[0];
    if (inner) return this.expr(inner);
    const list = this.nodes(n, "exprList")[0];
    if (list) return { kind: "list", items: this.exprList(list), span };
    const site = this.node(n, "siteExpr");
    return {
      kind: "site",
      name: this.ident(this.token(site, "name")!),
      args: this.callArgs(this.node(site, "callArgs")),
      fallback: this.unary(this.node(site, "fallback")),
      span,
    };
  }
}
