import { createToken, Lexer, type TokenType } from "chevrotain";

export const Identifier = createToken({ name: "Identifier", pattern: /[A-Za-z_][A-Za-z0-9_]*/ });

function keyword(word: string): TokenType {
  return createToken({ name: word[0].toUpperCase() + word.slice(1), pattern: new RegExp(`${word}\\b`), longer_alt: Identifier });
}

export const Import = keyword("import");
export const Block = keyword("block");
export const Model = keyword("model");
export const Param = keyword("param");
export const Init = keyword("init");
export const Frozen = keyword("frozen");
export const Forward = keyword("forward");
export const Repeat = keyword("repeat");
export const Let = keyword("let");
export const Tap = keyword("tap");
export const Site = keyword("site");
export const Default = keyword("default");
export const Return = keyword("return");
export const Fusion = keyword("fusion");
export const Each = keyword("each");
export const Train = keyword("train");
export const If = keyword("if");
export const Then = keyword("then");
export const Else = keyword("else");
export const And = keyword("and");
export const Or = keyword("or");
export const Not = keyword("not");
export const True = keyword("true");
export const False = keyword("false");
export const From = keyword("from");
export const As = keyword("as");
export const Tokenizer = keyword("tokenizer");
export const Preprocess = keyword("preprocess");

export const WhiteSpace = createToken({ name: "WhiteSpace", pattern: /[ \t\r\n]+/, group: Lexer.SKIPPED });
// A comment or string ends at any line ending, `\r` included: files saved with classic
// Mac line endings must not turn the rest of the file into one comment.
export const Comment = createToken({ name: "Comment", pattern: /#[^\r\n]*/, group: Lexer.SKIPPED });

export const Float = createToken({ name: "Float", pattern: /(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+/ });
export const Integer = createToken({ name: "Integer", pattern: /\d+/ });
export const StringLit = createToken({ name: "StringLit", pattern: /"(?:[^"\\\r\n]|\\.)*"/ });

export const Transpose = createToken({ name: "Transpose", pattern: /\^T\b/ });
export const Arrow = createToken({ name: "Arrow", pattern: /->/ });
export const Ellipsis = createToken({ name: "Ellipsis", pattern: /\.\.\./ });
export const Dot = createToken({ name: "Dot", pattern: /\./ });
export const Compare = createToken({ name: "Compare", pattern: /==|!=|<=|>=|<|>/ });
export const Equals = createToken({ name: "Equals", pattern: /=/ });
export const Plus = createToken({ name: "Plus", pattern: /\+/ });
export const Minus = createToken({ name: "Minus", pattern: /-/ });
export const Star = createToken({ name: "Star", pattern: /\*/ });
export const Slash = createToken({ name: "Slash", pattern: /\// });
export const Percent = createToken({ name: "Percent", pattern: /%/ });
export const At = createToken({ name: "At", pattern: /@/ });
export const LParen = createToken({ name: "LParen", pattern: /\(/ });
export const RParen = createToken({ name: "RParen", pattern: /\)/ });
export const LBracket = createToken({ name: "LBracket", pattern: /\[/ });
export const RBracket = createToken({ name: "RBracket", pattern: /]/ });
export const LBrace = createToken({ name: "LBrace", pattern: /\{/ });
export const RBrace = createToken({ name: "RBrace", pattern: /}/ });
export const Comma = createToken({ name: "Comma", pattern: /,/ });
export const Colon = createToken({ name: "Colon", pattern: /:/ });
export const Semicolon = createToken({ name: "Semicolon", pattern: /;/ });

export const allTokens: TokenType[] = [
  WhiteSpace,
  Comment,
  Import,
  Block,
  Model,
  Param,
  Init,
  Frozen,
  Forward,
  Repeat,
  Let,
  Tap,
  Site,
  Default,
  Return,
  Fusion,
  Each,
  Train,
  If,
  Then,
  Else,
  And,
  Or,
  Not,
  True,
  False,
  From,
  As,
  Tokenizer,
  Preprocess,
  Identifier,
  Float,
  Integer,
  StringLit,
  Transpose,
  Arrow,
  Ellipsis,
  Dot,
  Compare,
  Equals,
  Plus,
  Minus,
  Star,
  Slash,
  Percent,
  At,
  LParen,
  RParen,
  LBracket,
  RBracket,
  LBrace,
  RBrace,
  Comma,
  Colon,
  Semicolon,
];

export const dehvfLexer = new Lexer(allTokens, { positionTracking: "full", ensureOptimizations: false });
