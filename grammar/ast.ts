import type { Span } from "./source.ts";

/** Every AST node carries the span of the text it came from. */
interface Node {
  readonly span: Span;
}

export interface Ident extends Node {
  readonly name: string;
}

export type ScalarTypeName = "int" | "float" | "bool" | "string";

export type Expr =
  | NumberLit
  | StringExpr
  | BoolLit
  | NameExpr
  | ListExpr
  | UnaryExpr
  | BinaryExpr
  | IfExpr
  | CallExpr
  | IndexExpr
  | MemberExpr
  | TransposeExpr
  | SiteExpr;

export interface NumberLit extends Node {
  readonly kind: "number";
  readonly value: number;
  readonly isInt: boolean;
}
export interface StringExpr extends Node {
  readonly kind: "string";
  readonly value: string;
}
export interface BoolLit extends Node {
  readonly kind: "bool";
  readonly value: boolean;
}
export interface NameExpr extends Node {
  readonly kind: "name";
  readonly name: string;
}
export interface ListExpr extends Node {
  readonly kind: "list";
  readonly items: readonly Expr[];
}
export interface UnaryExpr extends Node {
  readonly kind: "unary";
  readonly op: "-" | "not";
  readonly operand: Expr;
}
export type BinaryOp = "+" | "-" | "*" | "/" | "%" | "@" | "==" | "!=" | "<" | ">" | "<=" | ">=" | "and" | "or";
export interface BinaryExpr extends Node {
  readonly kind: "binary";
  readonly op: BinaryOp;
  readonly left: Expr;
  readonly right: Expr;
}
export interface IfExpr extends Node {
  readonly kind: "if";
  readonly cond: Expr;
  readonly then: Expr;
  readonly else: Expr;
}
export interface Arg extends Node {
  readonly name?: Ident;
  readonly value: Expr;
}
export interface CallExpr extends Node {
  readonly kind: "call";
  readonly callee: Expr;
  readonly args: readonly Arg[];
}
export type IndexItem =
  | { readonly kind: "at"; readonly span: Span; readonly value: Expr }
  | { readonly kind: "slice"; readonly span: Span; readonly start?: Expr; readonly end?: Expr }
  | { readonly kind: "all"; readonly span: Span } // `*`: every element of a repeat
  | { readonly kind: "ellipsis"; readonly span: Span };
export interface IndexExpr extends Node {
  readonly kind: "index";
  readonly target: Expr;
  readonly items: readonly IndexItem[];
}
export interface MemberExpr extends Node {
  readonly kind: "member";
  readonly target: Expr;
  readonly member: Ident;
}
export interface TransposeExpr extends Node {
  readonly kind: "transpose";
  readonly operand: Expr;
}
/** A named extension point: evaluates `fallback` unless a fusion targets it. */
export interface SiteExpr extends Node {
  readonly kind: "site";
  readonly name: Ident;
  readonly args: readonly Arg[];
  readonly fallback: Expr;
}

/** `[B, T, d]` or `[..., d] int`: a pattern over shapes; names bind on first use. */
export type DimPattern = { readonly kind: "ellipsis"; readonly span: Span } | { readonly kind: "dim"; readonly span: Span; readonly expr: Expr };
export interface TensorType extends Node {
  readonly dims: readonly DimPattern[] /** `int` or `float` (default) */;
  readonly dtypeName?: Ident;
}

export interface BlockParam extends Node {
  readonly name: Ident /** checked by the linker against ScalarTypeName */;
  readonly type: Ident;
  readonly default?: Expr;
}
export interface InitRule extends Node {
  readonly name: Ident;
  readonly args: readonly Arg[];
}
export interface ParamDecl extends Node {
  readonly kind: "param";
  readonly name: Ident;
  readonly shape: readonly Expr[];
  readonly init?: InitRule;
  readonly frozen: boolean;
  readonly when?: Expr;
}
/** `from "weights" [as family]` on a sub-block: its parameters' values come from a checkpoint. */
export interface WeightSourceDecl extends Node {
  /** as written: relative to the declaring file */
  readonly path: string;
  readonly pathSpan: Span;
  /** a checkpoint family of models/std/checkpoints/ (detected from the file when absent) */
  readonly family?: Ident;
}
export interface InstanceDecl extends Node {
  readonly kind: "instance";
  readonly name: Ident;
  readonly repeat?: Expr;
  readonly block: Ident;
  readonly args: readonly Arg[];
  readonly frozen: boolean;
  readonly source?: WeightSourceDecl;
  readonly when?: Expr;
}
export interface FusionClause extends Node {
  readonly name: Ident;
  readonly value: Expr;
}
export interface FusionDecl extends Node {
  readonly kind: "fusion";
  readonly name: Ident;
  readonly block: Ident;
  readonly args: readonly Arg[];
  /** `each`: one instance (own parameters) per target instead of one shared instance. */
  readonly each: boolean;
  readonly clauses: readonly FusionClause[];
}

export type FwdParamType = { readonly kind: "tensor"; readonly type: TensorType } | { readonly kind: "scalar"; readonly type: Ident; readonly span: Span };
export interface FwdParam extends Node {
  readonly name: Ident;
  readonly type: FwdParamType;
}
export type Stmt =
  | { readonly kind: "let"; readonly span: Span; readonly name: Ident; readonly value: Expr }
  | { readonly kind: "tap"; readonly span: Span; readonly name: Ident; readonly value: Expr }
  | { readonly kind: "return"; readonly span: Span; readonly value: Expr }
  | { readonly kind: "expr"; readonly span: Span; readonly value: Expr };
export interface ForwardDecl extends Node {
  readonly kind: "forward";
  readonly params: readonly FwdParam[];
  readonly result?: TensorType;
  readonly body: readonly Stmt[];
}

export type Member = ParamDecl | InstanceDecl | FusionDecl | ForwardDecl;

/** `tokenizer "tok512.bin"` in a model: its tokenizer, relative to the declaring file. */
export interface TokenizerDecl extends Node {
  readonly path: string;
  readonly pathSpan: Span;
}

/** `preprocess(mean: ..., std: ..., resize: ..., interpolation: ...)` in a model: how its `image` input is prepared. */
export interface PreprocessDecl extends Node {
  readonly args: readonly Arg[];
}

export interface BlockDecl extends Node {
  readonly kind: "block" | "model";
  readonly name: Ident;
  readonly params: readonly BlockParam[];
  readonly members: readonly Member[];
  /** every `tokenizer` declaration (the linker allows one, in a model) */
  readonly tokenizers?: readonly TokenizerDecl[];
  /** every `preprocess(...)` declaration (the linker allows one, in a model) */
  readonly preprocess?: readonly PreprocessDecl[];
}

export interface TrainEntry extends Node {
  readonly key: Ident;
  readonly value: Expr;
}
export interface TrainDecl extends Node {
  readonly kind: "train";
  readonly name?: Ident;
  readonly entries: readonly TrainEntry[];
}
export interface ImportDecl extends Node {
  readonly kind: "import";
  readonly path: string;
}

export interface FileAst {
  readonly path: string;
  readonly imports: readonly ImportDecl[];
  readonly decls: readonly BlockDecl[];
  readonly train: readonly TrainDecl[];
}
