import type { BlockDecl, ForwardDecl, ParamDecl } from "../grammar/ast.ts";
import type { Span } from "../grammar/source.ts";
import type { Dim } from "./dims.ts";
import type { ParamSource } from "../io/checkpoints/param-source.ts";
import type { InitRule, Node } from "./ir.ts";

/** A parameter tensor declared somewhere in the instance tree. */
export interface ParamInfo {
  /** dotted path, e.g. `language.layer.3.ffn.gate` */
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: InitRule;
  readonly trainable: boolean;
  readonly decl: ParamDecl;
  /** its value comes from this checkpoint tensor instead of `init` */
  readonly source?: ParamSource;
}

/** One instantiated block: its arguments, parameters and children, by path. */
export interface Instance {
  readonly path: string;
  readonly decl: BlockDecl;
  readonly args: ReadonlyMap<string, Value>;
  readonly params: Map<string, ParamInfo>;
  readonly children: Map<string, Instance | Instance[]>;
  readonly frozen: boolean;
  readonly forward?: ForwardDecl;
  /** names of `site`s and `tap`s in the forward body (static scan, for fusion targets) */
  readonly sites: ReadonlySet<string>;
  readonly taps: ReadonlySet<string>;
  /** where this instance was declared (for messages) */
  readonly span: Span;
}

export type Value =
  | { readonly kind: "tensor"; readonly node: Node }
  | { readonly kind: "int"; readonly value: Dim }
  | { readonly kind: "float"; readonly value: number }
  | { readonly kind: "bool"; readonly value: boolean }
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "list"; readonly items: readonly Value[] }
  | { readonly kind: "instance"; readonly inst: Instance }
  | { readonly kind: "builtin"; readonly name: string };

export const tensorV = (node: Node): Value => ({ kind: "tensor", node });
export const intV = (value: Dim): Value => ({ kind: "int", value });
export const floatV = (value: number): Value => ({ kind: "float", value });
export const boolV = (value: boolean): Value => ({ kind: "bool", value });

export function describeValue(v: Value): string {
  switch (v.kind) {
    case "tensor":
      return `a ${v.node.dtype === "i32" ? "int " : ""}tensor`;
    case "int":
      return "an int";
    case "float":
      return "a float";
    case "bool":
      return "a bool";
    case "string":
      return "a string";
    case "list":
      return `a list of ${v.items.length}`;
    case "instance":
      return `block instance \`${v.inst.path}\` (${v.inst.decl.name.name})`;
    case "builtin":
      return `builtin \`${v.name}\``;
  }
}
