import { CstParser, type CstNode, type IRecognitionException, type IToken } from "chevrotain";
import { MAX_ERRORS, MAX_EXPR_NESTING, MAX_SOURCE_TOKENS } from "./limits.ts";
import * as T from "./tokens.ts";

/**
 * Thrown through Chevrotain (which rethrows what is not a recognition error) to stop a
 * parse at a limit. Chevrotain still records "not all input parsed" while unwinding, so
 * the errors recorded before the stop are counted here.
 */
class LimitReached extends Error {
  constructor(
    readonly token: IToken,
    readonly hint: string,
    message: string,
    readonly errorsBefore: number,
  ) {
    super(message);
  }
}

/**
 * Chevrotain records every syntax error through this method of its error-handling trait.
 * It is not in the typings but has been there since Chevrotain 1; checked here so an
 * upgrade that drops it fails every parse loudly rather than losing the error bound.
 */
type SaveError = (this: CstParser, e: IRecognitionException) => IRecognitionException;
const saveError = (CstParser.prototype as unknown as { SAVE_ERROR?: SaveError }).SAVE_ERROR;
if (typeof saveError !== "function") throw new Error("internal: chevrotain's parser has no SAVE_ERROR to bound syntax errors with");

/**
 * The concrete grammar of .dehvf files. Recovery is on so one run reports several
 * syntax errors; cst-to-ast.ts only runs on error-free trees.
 */
class DehvfParser extends CstParser {
  constructor() {
    super(T.allTokens, { recoveryEnabled: true, nodeLocationTracking: "full", maxLookahead: 3 });
    this.performSelfAnalysis();
  }

  /**
   * Expression levels open at the current token. Every cycle of the expression rules passes
   * through unaryExpr or ifExpr, so counting those (and postfix operators, which nest in
   * the tree though not in the parse) bounds both this parser's recursion and the depth
   * of the trees later phases walk. Only ACTIONs touch it: rules also run to record the
   * grammar.
   */
  nesting = 0;

  private deeper(): void {
    this.ACTION(() => {
      if (++this.nesting > MAX_EXPR_NESTING)
        throw new LimitReached(
          this.LA(1),
          "parentheses, brackets, calls, indexing, `.member`, `^T`, unary `-`/`not` and `if` each open a level; name inner parts with `let`",
          `expression nested deeper than ${MAX_EXPR_NESTING} levels`,
          this.errorCount,
        );
    });
  }

  /** syntax errors of this parse: it stops at MAX_ERRORS, as garbage input has one per token */
  errorCount = 0;

  SAVE_ERROR(e: IRecognitionException): IRecognitionException {
    const saved = saveError!.call(this, e);
    if (++this.errorCount >= MAX_ERRORS)
      throw new LimitReached(e.token, "fix these first; the rest may follow from them", `stopped after ${MAX_ERRORS} syntax errors`, this.errorCount);
    return saved;
  }

  /** Runs `body` one expression level deeper. */
  private nested(body: () => void): void {
    this.deeper();
    try {
      body();
    } finally {
      this.ACTION(() => this.nesting--);
    }
  }

  file = this.RULE("file", () => {
    this.MANY(() =>
      this.OR([{ ALT: () => this.SUBRULE(this.importDecl) }, { ALT: () => this.SUBRULE(this.blockDecl) }, { ALT: () => this.SUBRULE(this.trainDecl) }]),
    );
  });

  importDecl = this.RULE("importDecl", () => {
    this.CONSUME(T.Import);
    this.CONSUME(T.StringLit);
  });

  blockDecl = this.RULE("blockDecl", () => {
    this.OR([{ ALT: () => this.CONSUME(T.Block, { LABEL: "keyword" }) }, { ALT: () => this.CONSUME(T.Model, { LABEL: "keyword" }) }]);
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.OPTION(() => {
      this.CONSUME(T.LParen);
      this.OPTION2(() => {
        this.SUBRULE(this.blockParam);
        this.MANY(() => {
          this.CONSUME(T.Comma);
          this.SUBRULE2(this.blockParam);
        });
      });
      this.CONSUME(T.RParen);
    });
    this.CONSUME(T.LBrace);
    this.MANY2(() => this.SUBRULE(this.member));
    this.CONSUME(T.RBrace);
  });

  blockParam = this.RULE("blockParam", () => {
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.CONSUME(T.Colon);
    this.CONSUME2(T.Identifier, { LABEL: "type" });
    this.OPTION(() => {
      this.CONSUME(T.Equals);
      this.SUBRULE(this.expr, { LABEL: "default" });
    });
  });

  member = this.RULE("member", () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.paramDecl) },
      { ALT: () => this.SUBRULE(this.forwardDecl) },
      { ALT: () => this.SUBRULE(this.fusionDecl) },
      { ALT: () => this.SUBRULE(this.instanceDecl) },
      { ALT: () => this.SUBRULE(this.tokenizerDecl) },
      { ALT: () => this.SUBRULE(this.preprocessDecl) },
    ]);
  });

  /** `tokenizer "tok512.bin"`: the model's tokenizer, by path relative to the file. */
  tokenizerDecl = this.RULE("tokenizerDecl", () => {
    this.CONSUME(T.Tokenizer);
    this.CONSUME(T.StringLit);
  });

  /** `preprocess(mean: [...], std: [...], ...)`: how the model's `image` input is prepared (data/preprocess.ts). */
  preprocessDecl = this.RULE("preprocessDecl", () => {
    this.CONSUME(T.Preprocess);
    this.SUBRULE(this.callArgs);
  });

  paramDecl = this.RULE("paramDecl", () => {
    this.CONSUME(T.Param);
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.CONSUME(T.Colon);
    this.SUBRULE(this.exprList, { LABEL: "shape" });
    this.OPTION(() => {
      this.CONSUME(T.Init);
      this.CONSUME2(T.Identifier, { LABEL: "init" });
      this.OPTION2(() => this.SUBRULE(this.callArgs));
    });
    this.OPTION3(() => this.CONSUME(T.Frozen));
    this.OPTION4(() => {
      this.CONSUME(T.If);
      this.SUBRULE(this.expr, { LABEL: "when" });
    });
  });

  instanceDecl = this.RULE("instanceDecl", () => {
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.CONSUME(T.Equals);
    this.OPTION(() => {
      this.CONSUME(T.Repeat);
      this.CONSUME(T.LParen);
      this.SUBRULE(this.expr, { LABEL: "repeat" });
      this.CONSUME(T.RParen);
    });
    this.CONSUME2(T.Identifier, { LABEL: "block" });
    this.SUBRULE(this.callArgs);
    this.OPTION2(() => this.CONSUME(T.Frozen));
    // `from "weights" [as family]`: the parameters' values come from a checkpoint
    this.OPTION4(() => {
      this.CONSUME(T.From);
      this.CONSUME(T.StringLit, { LABEL: "from" });
      this.OPTION5(() => {
        this.CONSUME(T.As);
        // a family name may have dashes: `as hf-clip-vision`
        this.CONSUME3(T.Identifier, { LABEL: "family" });
        this.MANY(() => {
          this.CONSUME(T.Minus, { LABEL: "family" });
          this.CONSUME4(T.Identifier, { LABEL: "family" });
        });
      });
    });
    this.OPTION3(() => {
      this.CONSUME(T.If);
      this.SUBRULE2(this.expr, { LABEL: "when" });
    });
  });

  fusionDecl = this.RULE("fusionDecl", () => {
    this.CONSUME(T.Fusion);
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.CONSUME(T.Equals);
    this.CONSUME2(T.Identifier, { LABEL: "block" });
    this.SUBRULE(this.callArgs);
    this.OPTION(() => this.CONSUME(T.Each));
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.fusionClause));
    this.CONSUME(T.RBrace);
  });

  fusionClause = this.RULE("fusionClause", () => {
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.SUBRULE(this.expr);
  });

  forwardDecl = this.RULE("forwardDecl", () => {
    this.CONSUME(T.Forward);
    this.CONSUME(T.LParen);
    this.OPTION(() => {
      this.SUBRULE(this.fwdParam);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.fwdParam);
      });
    });
    this.CONSUME(T.RParen);
    this.OPTION2(() => {
      this.CONSUME(T.Arrow);
      this.SUBRULE(this.tensorType, { LABEL: "result" });
    });
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Equals);
          this.SUBRULE(this.expr);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.LBrace);
          this.MANY2(() => this.SUBRULE(this.stmt));
          this.CONSUME(T.RBrace);
        },
      },
    ]);
  });

  fwdParam = this.RULE("fwdParam", () => {
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.CONSUME(T.Colon);
    this.OR([{ ALT: () => this.SUBRULE(this.tensorType) }, { ALT: () => this.CONSUME2(T.Identifier, { LABEL: "scalar" }) }]);
  });

  tensorType = this.RULE("tensorType", () => {
    this.CONSUME(T.LBracket);
    this.SUBRULE(this.dimPattern);
    this.MANY(() => {
      this.CONSUME(T.Comma);
      this.SUBRULE2(this.dimPattern);
    });
    this.CONSUME(T.RBracket);
    this.OPTION(() => this.CONSUME(T.Identifier, { LABEL: "dtype" }));
  });

  dimPattern = this.RULE("dimPattern", () => {
    this.OR([{ ALT: () => this.CONSUME(T.Ellipsis) }, { ALT: () => this.SUBRULE(this.expr) }]);
  });

  stmt = this.RULE("stmt", () => {
    this.OR([
      {
        ALT: () => {
          this.OR2([{ ALT: () => this.CONSUME(T.Let, { LABEL: "keyword" }) }, { ALT: () => this.CONSUME(T.Tap, { LABEL: "keyword" }) }]);
          this.CONSUME(T.Identifier, { LABEL: "name" });
          this.CONSUME(T.Equals);
          this.SUBRULE(this.expr);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Return, { LABEL: "keyword" });
          this.SUBRULE2(this.expr);
        },
      },
      { ALT: () => this.SUBRULE3(this.expr) },
    ]);
    this.OPTION(() => this.CONSUME(T.Semicolon));
  });

  trainDecl = this.RULE("trainDecl", () => {
    this.CONSUME(T.Train);
    this.OPTION(() => this.CONSUME(T.Identifier, { LABEL: "name" }));
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.trainEntry));
    this.CONSUME(T.RBrace);
  });

  trainEntry = this.RULE("trainEntry", () => {
    // `model = Name` reads naturally in a train section, though `model` (and `tokenizer`) are keywords elsewhere
    this.OR([
      { ALT: () => this.CONSUME(T.Identifier, { LABEL: "key" }) },
      { ALT: () => this.CONSUME(T.Model, { LABEL: "key" }) },
      { ALT: () => this.CONSUME(T.Tokenizer, { LABEL: "key" }) },
    ]);
    this.CONSUME(T.Equals);
    this.SUBRULE(this.expr);
  });

  // ---- expressions, loosest first ----
  expr = this.RULE("expr", () => {
    this.OR([{ ALT: () => this.SUBRULE(this.ifExpr) }, { ALT: () => this.SUBRULE(this.orExpr) }]);
  });

  ifExpr = this.RULE("ifExpr", () =>
    this.nested(() => {
      this.CONSUME(T.If);
      this.SUBRULE(this.expr, { LABEL: "cond" });
      this.CONSUME(T.Then);
      this.SUBRULE2(this.expr, { LABEL: "then" });
      this.CONSUME(T.Else);
      this.SUBRULE3(this.expr, { LABEL: "else" });
    }),
  );

  orExpr = this.RULE("orExpr", () => {
    this.SUBRULE(this.andExpr, { LABEL: "operands" });
    this.MANY(() => {
      this.CONSUME(T.Or, { LABEL: "ops" });
      this.SUBRULE2(this.andExpr, { LABEL: "operands" });
    });
  });

  andExpr = this.RULE("andExpr", () => {
    this.SUBRULE(this.cmpExpr, { LABEL: "operands" });
    this.MANY(() => {
      this.CONSUME(T.And, { LABEL: "ops" });
      this.SUBRULE2(this.cmpExpr, { LABEL: "operands" });
    });
  });

  cmpExpr = this.RULE("cmpExpr", () => {
    this.SUBRULE(this.addExpr, { LABEL: "operands" });
    this.OPTION(() => {
      this.CONSUME(T.Compare, { LABEL: "ops" });
      this.SUBRULE2(this.addExpr, { LABEL: "operands" });
    });
  });

  addExpr = this.RULE("addExpr", () => {
    this.SUBRULE(this.mulExpr, { LABEL: "operands" });
    this.MANY(() => {
      this.OR([{ ALT: () => this.CONSUME(T.Plus, { LABEL: "ops" }) }, { ALT: () => this.CONSUME(T.Minus, { LABEL: "ops" }) }]);
      this.SUBRULE2(this.mulExpr, { LABEL: "operands" });
    });
  });

  mulExpr = this.RULE("mulExpr", () => {
    this.SUBRULE(this.unaryExpr, { LABEL: "operands" });
    this.MANY(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.Star, { LABEL: "ops" }) },
        { ALT: () => this.CONSUME(T.Slash, { LABEL: "ops" }) },
        { ALT: () => this.CONSUME(T.Percent, { LABEL: "ops" }) },
        { ALT: () => this.CONSUME(T.At, { LABEL: "ops" }) },
      ]);
      this.SUBRULE2(this.unaryExpr, { LABEL: "operands" });
    });
  });

  unaryExpr = this.RULE("unaryExpr", () =>
    this.nested(() => {
      this.OR([
        {
          ALT: () => {
            this.OR2([{ ALT: () => this.CONSUME(T.Minus, { LABEL: "op" }) }, { ALT: () => this.CONSUME(T.Not, { LABEL: "op" }) }]);
            this.SUBRULE(this.unaryExpr, { LABEL: "operand" });
          },
        },
        { ALT: () => this.SUBRULE(this.postfixExpr) },
      ]);
    }),
  );

  postfixExpr = this.RULE("postfixExpr", () => {
    this.SUBRULE(this.primary);
    // `x.a.b^T` is member(member(transpose(...))): each postfix operator is a level of the tree.
    const outer = this.ACTION(() => this.nesting);
    try {
      this.MANY(() => {
        this.deeper();
        this.SUBRULE(this.postfixOp);
      });
    } finally {
      this.ACTION(() => {
        this.nesting = outer;
      });
    }
  });

  postfixOp = this.RULE("postfixOp", () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.callArgs) },
      {
        ALT: () => {
          this.CONSUME(T.LBracket);
          this.SUBRULE(this.indexItem);
          this.MANY(() => {
            this.CONSUME(T.Comma);
            this.SUBRULE2(this.indexItem);
          });
          this.CONSUME(T.RBracket);
        },
      },
      { ALT: () => this.CONSUME(T.Transpose) },
      {
        ALT: () => {
          this.CONSUME(T.Dot);
          this.CONSUME(T.Identifier, { LABEL: "member" });
        },
      },
    ]);
  });

  indexItem = this.RULE("indexItem", () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Star) },
      { ALT: () => this.CONSUME(T.Ellipsis) },
      {
        ALT: () => {
          this.CONSUME(T.Colon, { LABEL: "colon" });
          this.OPTION(() => this.SUBRULE(this.expr, { LABEL: "end" }));
        },
      },
      {
        ALT: () => {
          this.SUBRULE2(this.expr, { LABEL: "start" });
          this.OPTION2(() => {
            this.CONSUME2(T.Colon, { LABEL: "colon" });
            this.OPTION3(() => this.SUBRULE3(this.expr, { LABEL: "end" }));
          });
        },
      },
    ]);
  });

  callArgs = this.RULE("callArgs", () => {
    this.CONSUME(T.LParen);
    this.OPTION(() => {
      this.SUBRULE(this.arg);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.arg);
      });
    });
    this.CONSUME(T.RParen);
  });

  arg = this.RULE("arg", () => {
    this.OPTION({
      GATE: () => this.LA(2).tokenType === T.Colon,
      DEF: () => {
        this.CONSUME(T.Identifier, { LABEL: "name" });
        this.CONSUME(T.Colon);
      },
    });
    this.SUBRULE(this.expr);
  });

  exprList = this.RULE("exprList", () => {
    this.CONSUME(T.LBracket);
    this.OPTION(() => {
      this.SUBRULE(this.expr);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.expr);
      });
    });
    this.CONSUME(T.RBracket);
  });

  primary = this.RULE("primary", () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Integer) },
      { ALT: () => this.CONSUME(T.Float) },
      { ALT: () => this.CONSUME(T.StringLit) },
      { ALT: () => this.CONSUME(T.True) },
      { ALT: () => this.CONSUME(T.False) },
      { ALT: () => this.CONSUME(T.Identifier) },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.SUBRULE(this.expr);
          this.CONSUME(T.RParen);
        },
      },
      { ALT: () => this.SUBRULE(this.exprList) },
      { ALT: () => this.SUBRULE(this.siteExpr) },
    ]);
  });

  siteExpr = this.RULE("siteExpr", () => {
    this.CONSUME(T.Site);
    this.CONSUME(T.Identifier, { LABEL: "name" });
    this.SUBRULE(this.callArgs);
    this.CONSUME(T.Default);
    this.SUBRULE(this.unaryExpr, { LABEL: "fallback" });
  });
}

/** One parser instance is reused (Chevrotain's self-analysis is the expensive part). */
export const parser = new DehvfParser();

/** A bound of limits.ts that stopped the parse, at the token that crossed it. */
export interface LimitHit {
  readonly start: number;
  readonly end: number;
  readonly message: string;
  readonly hint: string;
}

export interface ParseOutcome {
  /** absent when a limit stopped the parse */
  cst?: CstNode;
  lexErrors: { offset: number; length: number; message: string }[];
  parseErrors: IRecognitionException[];
  limit?: LimitHit;
}

/** Located at `t`, or at the last character when `t` is the end of input (which has no offset). */
function hit(t: IToken, text: string, message: string, hint: string): LimitHit {
  if (Number.isNaN(t.startOffset)) return { start: Math.max(0, text.length - 1), end: text.length, message, hint };
  return { start: t.startOffset, end: (t.endOffset ?? t.startOffset) + 1, message, hint };
}

export function parseText(text: string): ParseOutcome {
  const lex = T.dehvfLexer.tokenize(text);
  const lexErrors = lex.errors.map((e) => ({ offset: e.offset, length: e.length, message: e.message }));
  if (lex.tokens.length > MAX_SOURCE_TOKENS)
    return {
      lexErrors,
      parseErrors: [],
      limit: hit(lex.tokens[MAX_SOURCE_TOKENS], text, `file has more than ${MAX_SOURCE_TOKENS} tokens`, "split it into files that import each other"),
    };
  parser.input = lex.tokens;
  parser.nesting = 0;
  parser.errorCount = 0;
  try {
    return { cst: parser.file(), lexErrors, parseErrors: parser.errors };
  } catch (e) {
    if (!(e instanceof LimitReached)) throw e;
    return { lexErrors, parseErrors: parser.errors.slice(0, e.errorsBefore), limit: hit(e.token, text, e.message, e.hint) };
  }
}
