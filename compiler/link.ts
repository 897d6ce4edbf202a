import type * as A from "../grammar/ast.ts";
import { forEachExpr } from "../grammar/ast-walk.ts";
import { type Diagnostic, didYouMean } from "../grammar/diagnostics.ts";
import { MAX_ERRORS } from "../grammar/limits.ts";
import type { Program } from "../grammar/modules.ts";
import { builtins } from "./builtins.ts";
import { INIT_RULES } from "./init-rules.ts";
import { checkWeightDecls } from "./weight-sources.ts";
import { checkPreprocessDecls } from "./preprocess-decl.ts";

const SCALAR_TYPES = ["int", "float", "bool", "string"];
const ELEMENT_TYPES = ["int", "float", "i32", "f32"];

/** Thrown to stop linking once MAX_ERRORS are found: each unknown name's suggestion scans every name in scope. */
const enough = new Error("enough link errors");

/** `table[key]` without reaching the prototype: a model may name a function `toString`. */
function ownEntry<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** Names visible at one point: a chain of sets, innermost first. */
class Names {
  private readonly own = new Set<string>();
  constructor(
    private readonly parent?: Names,
    /** the outermost scope holds the builtins */
    private readonly builtin = false,
  ) {}
  /** true when a user binding hides the builtin of that name */
  isShadowed(n: string): boolean {
    return !this.builtin && (this.own.has(n) || (this.parent?.isShadowed(n) ?? false));
  }
  add(n: string): void {
    this.own.add(n);
  }
  has(n: string): boolean {
    return this.own.has(n) || (this.parent?.has(n) ?? false);
  }
  all(): string[] {
    return [...this.own, ...(this.parent?.all() ?? [])];
  }
  child(): Names {
    return new Names(this);
  }
}

/**
 * The link phase: resolves every name that can be resolved without evaluating
 * anything (blocks, block arguments, variables, builtins, init rules, types) across
 * all loaded files, and reports all problems at once. Value-dependent checks (shapes,
 * repeat indices, fusion targets) are the elaborator's. Stops at MAX_ERRORS.
 */
export function link(program: Program): Diagnostic[] {
  const out: Diagnostic[] = [];
  try {
    checkNames(program, (d) => {
      out.push(d);
      if (out.length >= MAX_ERRORS) throw enough;
    });
  } catch (e) {
    if (e !== enough) throw e;
  }
  return out;
}

function checkNames(program: Program, report: (d: Diagnostic) => void): void {
  const err = (message: string, node: { span: A.Ident["span"] }, hint?: string) => report({ phase: "link", message, span: node.span, hint });
  const builtinNames = Object.keys(builtins);

  const checkCall = (callee: A.Ident, args: readonly A.Arg[], span: A.Ident["span"], names: Names) => {
    const target = program.decls.get(callee.name);
    args.forEach((a) => expr(a.value, names));
    if (!target)
      return err(
        `unknown block \`${callee.name}\``,
        callee,
        didYouMean(
          callee.name,
          [...program.decls.keys()].filter((k) => program.decls.get(k)!.kind === "block"),
        ),
      );
    if (target.kind === "model") return err(`\`${callee.name}\` is a model; only blocks can be instantiated`, callee);
    const params = target.params.map((p) => p.name.name);
    const known = new Set(params); // a Set: generated blocks can have thousands of parameters
    const given = new Set<string>();
    let positional = 0;
    let sawNamed = false;
    for (const a of args) {
      if (a.name) {
        sawNamed = true;
        if (!known.has(a.name.name))
          err(
            `\`${callee.name}\` has no parameter \`${a.name.name}\``,
            a.name,
            didYouMean(a.name.name, params) ?? `its parameters: ${params.join(", ") || "none"}`,
          );
        else if (given.has(a.name.name)) err(`parameter \`${a.name.name}\` is given twice`, a);
        given.add(a.name.name);
      } else if (sawNamed) err("positional arguments must come before named ones", a, "name this argument too, like the ones before it");
      else if (positional >= params.length)
        err(
          `\`${callee.name}\` takes ${params.length} parameter${params.length === 1 ? "" : "s"}, but ${args.filter((x) => !x.name).length} positional arguments were given`,
          a,
        );
      else given.add(params[positional++]);
    }
    const missing = target.params.filter((p) => !p.default && !given.has(p.name.name)).map((p) => `\`${p.name.name}: ${p.type.name}\``);
    if (missing.length)
      report({ phase: "link", message: `\`${callee.name}\` needs ${missing.join(", ")}`, span, hint: "give them as named arguments, e.g. `d: 128`" });
  };

  /** Checks every bare name of an expression against the scope. */
  const expr = (root: A.Expr, names: Names): void =>
    forEachExpr(root, (e) => {
      if (e.kind === "name" && !names.has(e.name)) {
        const isBlock = program.decls.has(e.name);
        err(
          isBlock ? `\`${e.name}\` is a block; declare an instance of it as a member (\`x = ${e.name}(...)\`) and call that` : `unknown name \`${e.name}\``,
          e,
          isBlock ? undefined : didYouMean(e.name, names.all()),
        );
      }
      const b = e.kind === "call" && e.callee.kind === "name" && !names.isShadowed(e.callee.name) ? ownEntry(builtins, e.callee.name) : undefined;
      if (e.kind === "call" && b)
        for (const a of e.args)
          if (a.name && !b.params.includes(a.name.name))
            err(
              `${e.callee.kind === "name" ? e.callee.name : ""}() has no parameter \`${a.name.name}\``,
              a.name,
              didYouMean(a.name.name, b.params) ?? `its parameters: ${b.params.filter((p) => p !== "...").join(", ")}`,
            );
    });

  const tensorType = (t: A.TensorType, names: Names): void => {
    if (t.dtypeName && !ELEMENT_TYPES.includes(t.dtypeName.name))
      err(`unknown element type \`${t.dtypeName.name}\``, t.dtypeName, didYouMean(t.dtypeName.name, ELEMENT_TYPES) ?? "use `int` or `float` (the default)");
    for (const d of t.dims) {
      if (d.kind === "ellipsis") continue;
      // A bare unknown name in a type is a pattern variable: it binds the actual size.
      if (d.expr.kind === "name") names.add(d.expr.name);
      else expr(d.expr, names);
    }
  };

  const forward = (f: A.ForwardDecl, scope: Names, extra?: (names: Names) => void) => {
    const names = scope.child();
    for (const p of f.params) {
      if (p.type.kind === "tensor") tensorType(p.type.type, names);
      else if (!SCALAR_TYPES.includes(p.type.type.name))
        err(
          `unknown type \`${p.type.type.name}\``,
          p.type.type,
          didYouMean(p.type.type.name, [...SCALAR_TYPES, "[...]"]) ?? "use a tensor type like `[B, T, d]`, or int, float, bool, string",
        );
      names.add(p.name.name);
    }
    if (f.result) tensorType(f.result, names);
    extra?.(names);
    for (const s of f.body) {
      expr(s.value, names);
      if (s.kind === "let" || s.kind === "tap") names.add(s.name.name);
    }
    const last = f.body[f.body.length - 1];
    if (!last || last.kind !== "return") err("forward has no `return`", f, "end the body with `return <expression>`, or write `forward(...) = <expression>`");
  };

  for (const decl of program.decls.values()) {
    checkWeightDecls(decl, report);
    checkPreprocessDecls(decl, report);
    const builtinScope = new Names(undefined, true);
    builtinNames.forEach((n) => builtinScope.add(n));
    const scope = builtinScope.child();
    const declared = new Map<string, A.Ident>();
    for (const p of decl.params) {
      if (decl.kind === "model" && !p.default)
        err(`parameter \`${p.name.name}\` of model \`${decl.name.name}\` needs a default: models are not called with arguments`, p);
      if (!SCALAR_TYPES.includes(p.type.name))
        err(`unknown parameter type \`${p.type.name}\``, p.type, didYouMean(p.type.name, SCALAR_TYPES) ?? "use int, float, bool or string");
      if (declared.has(p.name.name)) err(`parameter \`${p.name.name}\` is declared twice`, p.name);
      if (p.default) expr(p.default, scope);
      declared.set(p.name.name, p.name);
      scope.add(p.name.name);
    }
    for (const m of decl.members) {
      if (m.kind === "forward") continue;
      if (declared.has(m.name.name))
        err(`\`${m.name.name}\` is declared twice in \`${decl.name.name}\``, m.name, "names of parameters, params, sub-blocks and fusions share one namespace");
      declared.set(m.name.name, m.name);
      scope.add(m.name.name);
    }
    const forwards = decl.members.filter((m): m is A.ForwardDecl => m.kind === "forward");
    if (forwards.length > 1) err(`\`${decl.name.name}\` has ${forwards.length} forward definitions; keep one`, forwards[1]);
    if (decl.kind === "model" && forwards.length === 0)
      err(`model \`${decl.name.name}\` has no forward`, decl.name, "add `forward(image: [B, 3, 224, 224], tokens: [B, T] int) -> [B, T, vocab] { ... }`");

    let modelInputs: Names | undefined;
    for (const m of decl.members) {
      switch (m.kind) {
        case "param":
          m.shape.forEach((e) => expr(e, scope));
          if (m.when) expr(m.when, scope);
          if (m.init) {
            const rule = ownEntry(INIT_RULES, m.init.name.name);
            if (!rule)
              err(
                `unknown init rule \`${m.init.name.name}\``,
                m.init.name,
                didYouMean(m.init.name.name, Object.keys(INIT_RULES)) ?? `known: ${Object.keys(INIT_RULES).join(", ")}`,
              );
            m.init.args.forEach((a, i) => {
              expr(a.value, scope);
              const name = a.name?.name ?? rule?.[i];
              if (rule && (!name || !rule.includes(name))) err(`init rule \`${m.init!.name.name}\` takes ${rule.length ? rule.join(", ") : "no arguments"}`, a);
            });
          }
          break;
        case "instance":
          if (m.repeat) expr(m.repeat, scope);
          if (m.when) expr(m.when, scope);
          checkCall(m.block, m.args, m.span, scope);
          break;
        case "fusion":
          if (decl.kind !== "model") {
            err(`fusions belong in a \`model\`, not in block \`${decl.name.name}\``, m);
            break;
          }
          checkCall(m.block, m.args, m.span, scope);
          break;
        case "forward":
          forward(m, scope, (names) => {
            modelInputs = names;
          });
          break;
      }
    }
    // Fusion clauses see the model's members, its forward inputs and `l`, the target's position.
    for (const m of decl.members) {
      if (m.kind !== "fusion" || decl.kind !== "model") continue;
      const names = (modelInputs ?? scope).child();
      names.add("l");
      for (const c of m.clauses) if (c.name.name !== "target") expr(c.value, names);
    }
  }
}
