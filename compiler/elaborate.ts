import type * as A from "../grammar/ast.ts";
import { forEachExpr } from "../grammar/ast-walk.ts";
import { DehvfError, type Diagnostic, didYouMean, fail } from "../grammar/diagnostics.ts";
import { MAX_EVAL_DEPTH, MAX_INSTANCES, MAX_REPEAT } from "../grammar/limits.ts";
import type { Program } from "../grammar/modules.ts";
import type { Span } from "../grammar/source.ts";
import { ArgError, type ArgValue, BuiltinArgs, type BuiltinContext, builtinNames, builtins } from "./builtins.ts";
import { CACHE_POS, CONTEXT_DIM, type ElaborationMode } from "./decoding.ts";
import { DROPOUT_SEED } from "./dropout.ts";
import { stringSalt } from "./hash.ts";
import { type Dim, type Shape, dimAdd, dimDivExact, dimEq, dimMul, dimStr, dimSub, shapeStr, sym } from "./dims.ts";
import { GraphBuilder } from "./graph.ts";
import { link } from "./link.ts";
import { makeInitRule, INIT_RULES } from "./init-rules.ts";
import type { DType, InitRule, Node } from "./ir.ts";
import { Scope } from "./scope.ts";
import { besideFile, WeightSources } from "./weight-sources.ts";
import { type PreprocessSpec, preprocessOf } from "./preprocess-decl.ts";
import { ShapeError } from "./shape-rules.ts";
import { numel } from "./tensor.ts";
import { TensorOps } from "./tensor-ops.ts";
import { boolV, describeValue, floatV, type Instance, intV, type ParamInfo, tensorV, type Value } from "./values.ts";

export interface InputInfo {
  readonly name: string;
  readonly shape: Shape;
  readonly dtype: DType;
  readonly node: Node;
}

export interface FusionInfo {
  readonly name: string;
  readonly block: string;
  readonly each: boolean;
  /** the sites it replaces, e.g. `language.layer.3.memory` */
  readonly targets: readonly string[];
}

/** One value a tap took: a block called more than once (a shared fusion at each of its targets) taps once per call. */
export interface TapValue {
  readonly node: Node;
  /** the fusion site being replaced when it was computed (`language.layer.3.memory`), if any */
  readonly site?: string;
}

/** The result of elaboration: one hash-consed graph plus everything around it. */
export interface CompiledModel {
  readonly name: string;
  readonly program: Program;
  readonly graph: GraphBuilder;
  readonly root: Instance;
  readonly inputs: readonly InputInfo[];
  readonly outputs: readonly { readonly name: string; readonly node: Node }[];
  /** every declared parameter of the instance tree, declaration order */
  readonly params: readonly ParamInfo[];
  readonly fusions: readonly FusionInfo[];
  /** run-time dimension symbols (B, T, ...) */
  readonly symbols: readonly string[];
  /** the model's `tokenizer "..."`, resolved against its file (absolute) */
  readonly tokenizer?: string;
  /** the model's `preprocess(...)` for its `image` input, as written (data/preprocess.ts completes it) */
  readonly preprocess?: PreprocessSpec;
  /** the mode it was elaborated in (compiler/decoding.ts) */
  readonly mode: ElaborationMode;
  /** persistent inputs (KV caches, values kept from prefill) and the outputs that update them after each run (none: read only) */
  readonly state: readonly { readonly input: string; readonly update?: string }[];
  /** every tap by path (`dehvf.alpha`, `vision.layer.3.out`), each value it took in the order computed: compiler/tap-outputs.ts reads them */
  readonly taps?: ReadonlyMap<string, readonly TapValue[]>;
}

export interface ElaborateOptions {
  /** full (training), prefill or decode: see compiler/decoding.ts */
  readonly mode?: ElaborationMode;
  /** run-time dimensions fixed at elaboration (decode: the new tokens' length, 1) */
  readonly fixed?: Readonly<Record<string, number>>;
  /** for a training step: `dropout(x, p)` drops (fed by the `dropout_seed` input); otherwise it is x (compiler/dropout.ts) */
  readonly training?: boolean;
}

interface Attachment {
  readonly fusion: A.FusionDecl;
  readonly instance: Instance;
  readonly index: number;
  readonly target: string;
}

/** Static scan of a forward body for `site` and `tap` names (fusion targets and sources). */
function scanForward(fwd: A.ForwardDecl | undefined): { sites: Set<string>; taps: Set<string> } {
  const sites = new Set<string>();
  const taps = new Set<string>(fwd ? ["out"] : []);
  for (const s of fwd?.body ?? []) {
    if (s.kind === "tap") taps.add(s.name.name);
    forEachExpr(s.value, (e) => {
      if (e.kind === "site") sites.add(e.name.name);
    });
  }
  return { sites, taps };
}

/**
 * Evaluates a model: instantiates its block tree (arguments, parameters, repeats),
 * attaches fusions to their sites, then runs the forward bodies symbolically,
 * building one hash-consed graph. Every error names the DSL span that caused it.
 */
class Elaborator {
  readonly graph = new GraphBuilder();
  readonly ops = new TensorOps(this.graph);
  readonly params: ParamInfo[] = [];
  /** `from "..."` checkpoints in force while instances are made */
  private readonly weights = new WeightSources();
  private readonly taps = new Map<string, Node | "ambiguous">();
  /** every value of every tap, per call (the DSL reads `taps`, where a tap computed twice is ambiguous) */
  private readonly tapValues = new Map<string, TapValue[]>();
  /** the fusion site whose replacement is being elaborated */
  private currentSite: string | undefined;
  private readonly attachments = new Map<string, Attachment>();
  private modelScope: Scope | undefined;
  private readonly symbols = new Set<string>();
  private depth = 0;

  /** state inputs made by the decoding builtins, and each one's new value */
  private readonly stateInputs: InputInfo[] = [];
  private readonly stateUpdates = new Map<Node, Node>();
  private readonly stateCount = new Map<string, number>();
  private cachePosInput: InputInfo | undefined;
  /** training: the `dropout_seed` input, and per instance path how many dropout calls it made (each call's salt) */
  private dropoutSeedInput: InputInfo | undefined;
  private readonly dropoutCalls = new Map<string, number>();

  constructor(
    private readonly program: Program,
    private readonly options: ElaborateOptions = {},
  ) {}

  private get mode(): ElaborationMode {
    return this.options.mode ?? "full";
  }

  /** The builtins' view of the elaborator, for a call inside `inst`. */
  private decodingContext(inst: Instance | undefined): BuiltinContext {
    return {
      mode: this.mode,
      training: this.options.training === true,
      dropoutStream: () => {
        const site = inst?.path || "model";
        const n = this.dropoutCalls.get(site) ?? 0;
        this.dropoutCalls.set(site, n + 1);
        const shape: Dim[] = [];
        this.dropoutSeedInput ??= { name: DROPOUT_SEED, shape, dtype: "i32", node: this.ops.make("input", [], { name: DROPOUT_SEED, shape, dtype: "i32" }) };
        return { seed: this.dropoutSeedInput.node, salt: stringSalt(`${site}#${n}`) };
      },
      state: (kind, shape, dtype) => {
        const base = `${inst?.path || "model"}@${kind}`;
        const n = this.stateCount.get(base) ?? 0;
        this.stateCount.set(base, n + 1);
        const name = n ? `${base}${n}` : base;
        const node = this.ops.make("input", [], { name, shape, dtype });
        this.stateInputs.push({ name, shape, dtype, node });
        return node;
      },
      update: (state, value) => {
        this.stateUpdates.set(state, value);
      },
      cachePos: (batch) => {
        this.cachePosInput ??= {
          name: CACHE_POS,
          shape: [batch],
          dtype: "i32",
          node: this.ops.make("input", [], { name: CACHE_POS, shape: [batch], dtype: "i32" }),
        };
        return this.cachePosInput.node;
      },
      context: () => {
        this.symbols.add(CONTEXT_DIM);
        return sym(CONTEXT_DIM);
      },
    };
  }

  // ---------- errors ----------

  private where(span: Span): string {
    const src = this.program.sources.get(span.file);
    if (!src) return span.file;
    const { line, col } = src.position(span.start);
    return `${span.file}:${line}:${col}`;
  }

  private text(span: Span): string {
    return this.program.sources.get(span.file)?.text.slice(span.start, span.end) ?? "";
  }

  /** Runs a tensor operation, turning shape violations into located diagnostics. */
  private at<T>(span: Span, f: () => T): T {
    const prev = this.graph.currentSpan;
    this.graph.currentSpan = span;
    try {
      return f();
    } catch (e) {
      if (e instanceof ShapeError) fail("shape", `${e.message} in \`${this.text(span).replace(/\s+/g, " ").slice(0, 80)}\``, span);
      if (e instanceof ArgError) fail("type", e.message, e.span ?? span);
      throw e;
    } finally {
      this.graph.currentSpan = prev;
    }
  }

  // ---------- instance tree ----------

  /** Names, arities and types were checked by the link phase: a miss here is a dehvf bug. */
  private blockDecl(name: A.Ident): A.BlockDecl {
    const d = this.program.decls.get(name.name);
    if (!d || d.kind === "model") throw new Error(`internal: block \`${name.name}\` passed link unresolved`);
    return d;
  }

  /** Binds a block's declared parameters from call arguments and defaults. */
  private bindBlockArgs(decl: A.BlockDecl, args: readonly A.Arg[], argScope: Scope): Map<string, Value> {
    const bound = new Map<string, Value>();
    const given = new Map<string, { value: Value; span: Span }>();
    let positional = 0;
    for (const a of args) {
      const p = a.name ? decl.params.find((q) => q.name.name === a.name!.name)! : decl.params[positional++];
      given.set(p.name.name, { value: this.eval(a.value, argScope), span: a.span });
    }
    const defaults = new Scope(undefined);
    for (const p of decl.params) {
      const g = given.get(p.name.name) ?? { value: this.eval(p.default!, defaults), span: p.default!.span };
      const v = this.coerceScalar(g.value, p.type.name, `parameter \`${p.name.name}\` of \`${decl.name.name}\``, g.span);
      bound.set(p.name.name, v);
      defaults.vars.set(p.name.name, v);
    }
    return bound;
  }

  private coerceScalar(v: Value, type: string, what: string, span: Span): Value {
    if (type === "int" && v.kind === "int") {
      if (typeof v.value !== "number") fail("type", `${what} must be a constant int, got ${dimStr(v.value)}`, span);
      return v;
    }
    if (type === "float" && (v.kind === "float" || (v.kind === "int" && typeof v.value === "number"))) return floatV(Number(v.value));
    if (type === v.kind && (type === "bool" || type === "string")) return v;
    // Usually `d / heads` with heads not dividing d: int `/` then yields a float.
    const hint =
      type === "int" && v.kind === "float" ? "`/` of ints gives a float when the division is not exact: check that the dimensions divide evenly" : undefined;
    return fail("type", `${what} must be ${type === "int" ? "an int" : `a ${type}`}, got ${describeValue(v)}`, span, hint);
  }

  private constInt(v: Value, what: string, span: Span): number {
    if (v.kind !== "int" || typeof v.value !== "number")
      fail("type", `${what} must be a constant int, got ${v.kind === "int" ? dimStr(v.value) : describeValue(v)}`, span);
    return v.value;
  }

  private condition(e: A.Expr | undefined, scope: Scope): boolean {
    if (!e) return true;
    const v = this.eval(e, scope);
    if (v.kind !== "bool") fail("type", `condition must be true or false, got ${describeValue(v)}`, e.span);
    return v.value;
  }

  /** blocks being instantiated, with their arguments: a block may contain itself only with different ones */
  private readonly nesting: string[] = [];

  /** block instances made so far, bounded by MAX_INSTANCES: repeats inside repeats multiply */
  private instances = 0;
  /** elements of all parameters so far: kept an exact integer, so parameter counts are exact */
  private elements = 0;

  /** Refuses a parameter whose element count (or the model's running total) a double cannot hold exactly. */
  private countElements(m: A.ParamDecl, shape: readonly number[]): void {
    const n = numel(shape);
    const span = m.shape.length ? { ...m.shape[0].span, end: m.shape[m.shape.length - 1].span.end } : m.span;
    const limit = `${Number.MAX_SAFE_INTEGER} (2^53 - 1)`;
    if (!Number.isSafeInteger(n))
      fail(
        "shape",
        `parameter \`${m.name.name}\` of shape [${shape.join(", ")}] has ${n.toPrecision(3)} elements; at most ${limit} can be counted exactly`,
        span,
      );
    this.elements += n;
    if (!Number.isSafeInteger(this.elements))
      fail("shape", `the model's parameters add up to more than ${limit} elements at \`${m.name.name}\`, more than can be counted exactly`, span);
  }

  instantiate(decl: A.BlockDecl, path: string, args: Map<string, Value>, frozen: boolean, span: Span): Instance {
    if (++this.instances > MAX_INSTANCES)
      fail(
        "link",
        `the model has more than ${MAX_INSTANCES} block instances`,
        span,
        "repeat counts multiply: `repeat(n)` of a block that holds `repeat(m)` makes n × m copies",
      );
    const key = `${decl.name.name}(${[...args].map(([k, v]) => `${k}=${v.kind}:${(v as { value?: unknown }).value}`).join(", ")})`;
    if (this.nesting.includes(key))
      fail(
        "link",
        `block \`${decl.name.name}\` contains itself with the same arguments, so it never ends`,
        span,
        "guard the inner instance with an `if` that eventually turns false",
      );
    if (this.nesting.length >= 100)
      fail("link", `blocks nest more than 100 deep at \`${decl.name.name}\``, span, "does a block contain itself under an `if` that never turns false?");
    this.nesting.push(key);
    try {
      return this.instantiateMembers(decl, path, args, frozen, span);
    } finally {
      this.nesting.pop();
    }
  }

  /** instantiate, noting the declaration: an error deep inside a std block then leads back to the user's line */
  private child(block: A.BlockDecl, path: string, args: Map<string, Value>, frozen: boolean, span: Span): Instance {
    try {
      return this.instantiate(block, path, args, frozen, span);
    } catch (e) {
      if (e instanceof DehvfError) e.addNote(`in \`${path.length > 60 ? `…${path.slice(-59)}` : path}\` (${block.name.name}), declared at ${this.where(span)}`);
      throw e;
    }
  }

  private instantiateMembers(decl: A.BlockDecl, path: string, args: Map<string, Value>, frozen: boolean, span: Span): Instance {
    const forward = decl.members.find((m): m is A.ForwardDecl => m.kind === "forward");
    const { sites, taps } = scanForward(forward);
    const inst: Instance = { path, decl, args, params: new Map(), children: new Map(), frozen, forward, sites, taps, span };
    const scope = new Scope(inst);
    const sub = (name: string) => (path ? `${path}.${name}` : name);
    for (const m of decl.members) {
      if (m.kind === "param") {
        if (!this.condition(m.when, scope)) continue;
        const shape = m.shape.map((e) => {
          const n = this.constInt(this.eval(e, scope), `dimension \`${this.text(e.span)}\` of parameter \`${m.name.name}\``, e.span);
          if (n < 1) fail("shape", `dimension \`${this.text(e.span)}\` of parameter \`${m.name.name}\` is ${n}; it must be at least 1`, e.span);
          return n;
        });
        this.countElements(m, shape);
        const source = this.weights.sourceOf(sub(m.name.name), shape);
        const info: ParamInfo = {
          name: sub(m.name.name),
          shape,
          init: this.initRule(m.init, scope),
          trainable: !(frozen || m.frozen),
          decl: m,
          ...(source && { source }),
        };
        inst.params.set(m.name.name, info);
        this.params.push(info);
      } else if (m.kind === "instance") {
        if (!this.condition(m.when, scope)) continue;
        const block = this.blockDecl(m.block);
        const childArgs = this.bindBlockArgs(block, m.args, scope);
        if (m.repeat) {
          const n = this.constInt(this.eval(m.repeat, scope), "repeat count", m.repeat.span);
          if (n < 1) fail("shape", `repeat count is ${n}; it must be at least 1`, m.repeat.span);
          if (n > MAX_REPEAT) fail("shape", `repeat count is ${n}; at most ${MAX_REPEAT} copies are allowed`, m.repeat.span);
          inst.children.set(
            m.name.name,
            Array.from({ length: n }, (_, i) =>
              this.weights.within(m, `${sub(m.name.name)}.${i}`, childArgs, () =>
                this.child(block, `${sub(m.name.name)}.${i}`, childArgs, frozen || m.frozen, m.span),
              ),
            ),
          );
        } else
          inst.children.set(
            m.name.name,
            this.weights.within(m, sub(m.name.name), childArgs, () => this.child(block, sub(m.name.name), childArgs, frozen || m.frozen, m.span)),
          );
      }
    }
    return inst;
  }

  private initRule(init: A.InitRule | undefined, scope: Scope): InitRule {
    if (!init) return { kind: "normal", std: 0.02, mean: 0 };
    const kind = init.name.name as InitRule["kind"];
    const vals: Record<string, number> = {};
    init.args.forEach((a, i) => {
      const name = a.name?.name ?? INIT_RULES[kind][i];
      const v = this.eval(a.value, scope);
      if (v.kind !== "float" && (v.kind !== "int" || typeof v.value !== "number")) fail("type", `init argument must be a number`, a.span);
      vals[name] = Number(v.value);
    });
    return makeInitRule(kind, vals);
  }

  // ---------- model ----------

  elaborateModel(model: A.BlockDecl): CompiledModel {
    // A model is never called, so its parameters (if any) take their defaults.
    const root = this.instantiate(model, "", this.bindBlockArgs(model, [], new Scope(undefined)), false, model.span);
    const rootScope = new Scope(root);
    const fusions: FusionInfo[] = [];
    for (const f of model.members.filter((m): m is A.FusionDecl => m.kind === "fusion")) fusions.push(this.setupFusion(f, root, rootScope));

    const fwd = root.forward;
    if (!fwd) throw new Error(`internal: model ${model.name.name} passed link without a forward`);
    const scope = rootScope.child();
    this.modelScope = scope;
    const inputs: InputInfo[] = [];
    for (const p of fwd.params) {
      if (p.type.kind !== "tensor") fail("type", `model inputs must be tensors; \`${p.name.name}\` is declared ${p.type.type.name}`, p.span);
      const tt = p.type.type;
      const shape = tt.dims.map((d): Dim => {
        if (d.kind === "ellipsis") fail("type", "`...` is not allowed in model inputs: give every dimension", d.span);
        if (d.expr.kind === "name" && !scope.local(d.expr.name) && !root.args.has(d.expr.name)) {
          const fixed = this.options.fixed?.[d.expr.name];
          if (fixed !== undefined) {
            scope.vars.set(d.expr.name, intV(fixed));
            return fixed;
          }
          this.symbols.add(d.expr.name);
          const s = sym(d.expr.name);
          scope.vars.set(d.expr.name, intV(s));
          return s;
        }
        const v = this.eval(d.expr, scope);
        if (v.kind !== "int") fail("type", `dimension must be an int, got ${describeValue(v)}`, d.span);
        return v.value;
      });
      const dtype = this.dtype(tt);
      const node = this.at(p.span, () => this.ops.make("input", [], { name: p.name.name, shape, dtype }));
      scope.vars.set(p.name.name, tensorV(node));
      inputs.push({ name: p.name.name, shape, dtype, node });
    }
    const result = this.runBody(fwd, scope, root);
    if (result.kind !== "tensor") fail("type", `model forward must return a tensor, got ${describeValue(result)}`, fwd.span);
    if (fwd.result) this.bindPattern(fwd.result, result.node, scope, "the model's result", fwd.result.span);
    for (const [key, att] of this.attachments)
      if (!this.usedAttachments.has(key))
        fail(
          "link",
          `fusion \`${att.fusion.name.name}\` targets site \`${key}\`, but the forward never reaches it`,
          att.fusion.name.span,
          "is the block that holds the site called from the model's forward?",
        );
    if (this.cachePosInput) inputs.push(this.cachePosInput);
    if (this.dropoutSeedInput) {
      if (inputs.some((i) => i.name === DROPOUT_SEED))
        fail("type", `\`${DROPOUT_SEED}\` is the input a training step feeds dropout's seed through; give the model's input another name`, model.name.span);
      inputs.push(this.dropoutSeedInput);
    }
    inputs.push(...this.stateInputs);
    const state = this.stateInputs.map((i) => ({ input: i.name, ...(this.stateUpdates.has(i.node) ? { update: `new:${i.name}` } : {}) }));
    const updates = this.stateInputs.filter((i) => this.stateUpdates.has(i.node)).map((i) => ({ name: `new:${i.name}`, node: this.stateUpdates.get(i.node)! }));
    return {
      name: model.name.name,
      program: this.program,
      graph: this.graph,
      root,
      inputs,
      outputs: [{ name: "out", node: result.node }, ...updates],
      params: this.params,
      fusions,
      symbols: [...this.symbols],
      ...(model.tokenizers?.length && { tokenizer: besideFile(model.tokenizers[0].pathSpan, model.tokenizers[0].path) }),
      ...(model.preprocess?.length && { preprocess: preprocessOf(model, inputs) }),
      mode: this.mode,
      state,
      taps: this.tapValues,
    };
  }

  private readonly usedAttachments = new Set<string>();

  private setupFusion(f: A.FusionDecl, root: Instance, rootScope: Scope): FusionInfo {
    const block = this.blockDecl(f.block);
    const targetClauses = f.clauses.filter((c) => c.name.name === "target");
    if (targetClauses.length !== 1)
      fail(
        "link",
        targetClauses.length
          ? `fusion \`${f.name.name}\` has ${targetClauses.length} \`target\` clauses; give one`
          : `fusion \`${f.name.name}\` has no \`target\` clause`,
        f.name.span,
        "e.g. `target language.layer[*].memory`",
      );
    const targets = this.resolveTargets(targetClauses[0].value, root);
    if (root.children.has(f.name.name)) fail("link", `\`${f.name.name}\` is declared twice in the model`, f.name.span);
    const args = this.bindBlockArgs(block, f.args, rootScope);
    const instances = f.each
      ? targets.map((_, i) => this.child(block, `${f.name.name}.${i}`, args, false, f.span))
      : [this.child(block, f.name.name, args, false, f.span)];
    root.children.set(f.name.name, f.each ? instances : instances[0]);

    const fwd = instances[0].forward;
    if (!fwd) fail("link", `fusion block \`${block.name.name}\` has no forward`, f.block.span);
    const names = fwd.params.map((p) => p.name.name);
    for (const c of f.clauses)
      if (c.name.name !== "target" && !names.includes(c.name.name))
        fail(
          "link",
          `\`${block.name.name}.forward\` has no parameter \`${c.name.name}\` for this clause`,
          c.name.span,
          didYouMean(c.name.name, names) ?? `its parameters: ${names.join(", ")}`,
        );

    targets.forEach((t, i) => {
      const key = `${t.inst.path}.${t.site}`;
      const prev = this.attachments.get(key);
      if (prev) fail("link", `site \`${key}\` is targeted by two fusions, \`${prev.fusion.name.name}\` and \`${f.name.name}\``, f.name.span);
      this.attachments.set(key, { fusion: f, instance: instances[f.each ? i : 0], index: i, target: key });
    });
    return { name: f.name.name, block: block.name.name, each: f.each, targets: targets.map((t) => `${t.inst.path}.${t.site}`) };
  }

  /** `language.layer[*].memory` → the concrete sites it names, checked against the tree. */
  private resolveTargets(e: A.Expr, root: Instance): { inst: Instance; site: string }[] {
    type Item = Instance | Instance[] | { inst: Instance; site: string };
    const isSite = (x: Item): x is { inst: Instance; site: string } => !Array.isArray(x) && "site" in x;
    const go = (e: A.Expr): Item[] => {
      if (e.kind === "name") {
        const c = root.children.get(e.name);
        if (!c)
          fail(
            "link",
            `unknown name \`${e.name}\` in target`,
            e.span,
            didYouMean(e.name, root.children.keys()) ?? `the model has ${[...root.children.keys()].join(", ")}`,
          );
        return [c];
      }
      if (e.kind === "member") {
        return go(e.target).map((x): Item => {
          if (Array.isArray(x))
            fail("link", `\`${this.text(e.target.span)}\` is repeated ${x.length} times: pick copies with [*], [i] or [a:b]`, e.target.span);
          if (isSite(x)) fail("link", `a site has no members`, e.member.span);
          const name = e.member.name;
          const c = x.children.get(name);
          if (c) return c;
          if (x.sites.has(name)) return { inst: x, site: name };
          const what = x.taps.has(name)
            ? `\`${name}\` is a tap (a value fusions read), not a site`
            : `\`${x.decl.name.name}\` has no site or sub-block \`${name}\``;
          return fail(
            "link",
            what,
            e.member.span,
            didYouMean(name, [...x.sites, ...x.children.keys()]) ?? `sites of ${x.decl.name.name}: ${[...x.sites].join(", ") || "none"}`,
          );
        });
      }
      if (e.kind === "index") {
        if (e.items.length !== 1) fail("link", `select copies of a repeated block with one index`, e.span);
        const item = e.items[0];
        return go(e.target).flatMap((x): Item[] => {
          if (!Array.isArray(x)) fail("link", `\`${this.text(e.target.span)}\` is not repeated; it cannot be indexed`, e.span);
          return this.selectList(x, item, new Scope(undefined), this.text(e.target.span)) as Instance[];
        });
      }
      return fail("link", `a target must be a path to sites, like \`language.layer[*].memory\``, e.span);
    };
    const items = go(e);
    return items.map((x) => {
      if (!isSite(x)) {
        const inst = Array.isArray(x) ? x[0] : x;
        fail(
          "link",
          `target \`${this.text(e.span)}\` names a block, not a site`,
          e.span,
          `sites of ${inst.decl.name.name}: ${[...inst.sites].join(", ") || "none"}`,
        );
      }
      return x;
    });
  }

  // ---------- forward evaluation ----------

  private dtype(tt: A.TensorType): DType {
    const n = tt.dtypeName?.name;
    if (n === undefined || n === "float" || n === "f32") return "f32";
    if (n === "int" || n === "i32") return "i32";
    throw new Error(`internal: element type ${n} passed link`);
  }

  /**
   * Matches a shape against a type pattern like `[B, N, d]` or `[..., d]`: names not
   * yet bound bind to the actual dim (pattern variables); everything else must agree.
   */
  private bindPattern(tt: A.TensorType, node: Node, scope: Scope, what: string, span: Span): void {
    const mismatch = (detail: string): never =>
      fail(
        "shape",
        `${what} should be ${this.text(tt.span)} but is ${node.dtype === "i32" ? "int " : ""}${shapeStr(node.shape)}: ${detail}`,
        span,
        `type declared at ${this.where(tt.span)}`,
      );
    const dtype = this.dtype(tt);
    if (dtype !== node.dtype) mismatch(`element type is ${node.dtype === "i32" ? "int" : "float"}, expected ${dtype === "i32" ? "int" : "float"}`);
    const ell = tt.dims.filter((d) => d.kind === "ellipsis").length;
    if (ell > 1) fail("type", "a type may use `...` once", tt.span);
    const fixed = tt.dims.length - ell;
    if (ell ? node.shape.length < fixed : node.shape.length !== fixed) mismatch(`rank ${node.shape.length}, expected ${ell ? "at least " : ""}${fixed}`);
    let i = 0;
    for (const d of tt.dims) {
      if (d.kind === "ellipsis") {
        const n = node.shape.length - fixed;
        const lead = node.shape.slice(i, i + n);
        const prev = scope.local("...");
        if (prev && prev.kind === "list") {
          const ok = prev.items.length === lead.length && prev.items.every((x, k) => x.kind === "int" && dimEq(x.value, lead[k]));
          if (!ok) mismatch(`\`...\` is ${shapeStr(lead)} here but was ${shapeStr(prev.items.map((x) => (x as { value: Dim }).value))} before`);
        } else scope.vars.set("...", { kind: "list", items: lead.map(intV) });
        i += n;
        continue;
      }
      const actual = node.shape[i];
      if (d.expr.kind === "name" && !scope.local(d.expr.name) && !scope.inst?.args.has(d.expr.name)) {
        scope.vars.set(d.expr.name, intV(actual));
      } else {
        const v = this.eval(d.expr, scope);
        if (v.kind !== "int") fail("type", `dimension must be an int, got ${describeValue(v)}`, d.span);
        if (!dimEq(v.value, actual)) mismatch(`dimension ${i} (\`${this.text(d.span)}\`) is ${dimStr(actual)}, expected ${dimStr(v.value)}`);
      }
      i++;
    }
  }

  private runBody(fwd: A.ForwardDecl, scope: Scope, inst: Instance): Value {
    for (const s of fwd.body) {
      const v = this.eval(s.value, scope);
      if (s.kind === "return") return v;
      if (s.kind === "let") scope.vars.set(s.name.name, v);
      if (s.kind === "tap") {
        if (v.kind !== "tensor") fail("type", `a tap must be a tensor, got ${describeValue(v)}`, s.value.span);
        scope.vars.set(s.name.name, v);
        this.recordTap(inst, s.name.name, v.node);
      }
    }
    throw new Error("internal: a forward without `return` passed link");
  }

  private recordTap(inst: Instance, name: string, node: Node): void {
    const key = inst.path ? `${inst.path}.${name}` : name;
    const prev = this.taps.get(key);
    this.taps.set(key, prev === undefined || prev === node ? node : "ambiguous");
    const values = this.tapValues.get(key) ?? this.tapValues.set(key, []).get(key)!;
    values.push({ node, ...(this.currentSite !== undefined && { site: this.currentSite }) });
  }

  callForward(inst: Instance, positional: readonly ArgValue[], named: ReadonlyMap<string, ArgValue>, callSpan: Span): Value {
    const fwd = inst.forward;
    const bname = inst.decl.name.name;
    if (!fwd) fail("link", `block \`${bname}\` has no forward, so \`${inst.path}\` cannot be called`, callSpan);
    if (++this.depth > 200) fail("link", `blocks call each other without end (depth 200 reached at \`${inst.path}\`)`, callSpan);
    const outerPath = this.graph.currentPath;
    this.graph.currentPath = inst.path;
    try {
      if (positional.length > fwd.params.length)
        fail(
          "type",
          `\`${bname}.forward\` takes ${fwd.params.length} argument${fwd.params.length === 1 ? "" : "s"}, got ${positional.length}`,
          callSpan,
          `declared at ${this.where(fwd.span)}`,
        );
      const scope = new Scope(inst);
      fwd.params.forEach((p, i) => {
        const a = named.get(p.name.name) ?? positional[i];
        if (!a) fail("type", `\`${bname}.forward\` needs argument \`${p.name.name}\``, callSpan, `declared at ${this.where(p.span)}`);
        const what = `argument \`${p.name.name}\` of \`${bname}.forward\``;
        if (p.type.kind === "scalar") {
          scope.vars.set(p.name.name, this.coerceScalar(a.value, p.type.type.name, what, a.span));
          return;
        }
        const node = this.toTensor(a.value, a.span);
        this.bindPattern(p.type.type, node, scope, what, a.span);
        scope.vars.set(p.name.name, tensorV(node));
      });
      for (const k of named.keys())
        if (!fwd.params.some((p) => p.name.name === k))
          fail(
            "type",
            `\`${bname}.forward\` has no parameter \`${k}\``,
            named.get(k)!.span,
            didYouMean(
              k,
              fwd.params.map((p) => p.name.name),
            ),
          );
      const result = this.runBody(fwd, scope, inst);
      if (fwd.result) {
        if (result.kind !== "tensor") fail("type", `\`${bname}.forward\` must return a tensor, got ${describeValue(result)}`, fwd.span);
        this.bindPattern(fwd.result, result.node, scope, `the result of \`${bname}.forward\``, fwd.result.span);
      }
      if (result.kind === "tensor") this.recordTap(inst, "out", result.node);
      return result;
    } catch (e) {
      if (e instanceof DehvfError) e.addNote(`in \`${inst.path || "model"}\` (${bname}.forward), called at ${this.where(callSpan)}`);
      throw e;
    } finally {
      this.depth--;
      this.graph.currentPath = outerPath;
    }
  }

  private evalSite(e: A.SiteExpr, scope: Scope): Value {
    const inst = scope.inst;
    const key = inst?.path ? `${inst.path}.${e.name.name}` : e.name.name;
    const att = this.attachments.get(key);
    if (!att) return this.eval(e.fallback, scope);
    this.usedAttachments.add(key);
    const siteArgs: ArgValue[] = e.args.map((a) => ({ value: this.eval(a.value, scope), span: a.span }));
    const fwd = att.instance.forward!;
    const named = new Map<string, ArgValue>();
    const clauseScope = this.modelScope!.child();
    clauseScope.vars.set("l", intV(att.index));
    for (const p of fwd.params.slice(siteArgs.length)) {
      const clause = att.fusion.clauses.find((c) => c.name.name === p.name.name);
      if (clause) {
        try {
          named.set(p.name.name, { value: this.eval(clause.value, clauseScope), span: clause.value.span });
        } catch (err) {
          if (err instanceof DehvfError)
            err.addNote(`while feeding \`${p.name.name}\` of fusion \`${att.fusion.name.name}\` at target \`${key}\` (l = ${att.index})`);
          throw err;
        }
      } else if (p.name.name === "l" && p.type.kind === "scalar") named.set("l", { value: intV(att.index), span: e.span });
      else
        fail(
          "link",
          `fusion \`${att.fusion.name.name}\` must give \`${p.name.name}\` to \`${att.instance.decl.name.name}.forward\``,
          att.fusion.name.span,
          `add a clause \`${p.name.name} <expression>\`; site \`${key}\` passes ${siteArgs.length} argument(s)`,
        );
    }
    const outerSite = this.currentSite;
    this.currentSite = key;
    try {
      return this.callForward(att.instance, siteArgs, named, e.span);
    } catch (err) {
      if (err instanceof DehvfError) err.addNote(`fusion \`${att.fusion.name.name}\` (declared at ${this.where(att.fusion.span)}) replacing site \`${key}\``);
      throw err;
    } finally {
      this.currentSite = outerSite;
    }
  }

  // ---------- expressions ----------

  toTensor(v: Value, span: Span): Node {
    switch (v.kind) {
      case "tensor":
        return v.node;
      case "int":
        return this.at(span, () => this.ops.size(v.value));
      case "float":
        return this.at(span, () => this.ops.scalar(v.value));
      case "list":
        if (v.items.length && v.items.every((x) => x.kind === "tensor" || x.kind === "list"))
          return this.at(span, () =>
            this.ops.stack(
              v.items.map((x) => this.toTensor(x, span)),
              0,
            ),
          );
        break;
      default:
        break;
    }
    return fail("type", `expected a tensor, got ${describeValue(v)}`, span);
  }

  /** evaluations in progress: expressions, and the block forwards they call */
  private evalDepth = 0;

  /**
   * Evaluates `e`, refusing to nest deeper than MAX_EVAL_DEPTH: the parser bounds each
   * expression, but a forward's expression may call a block whose forward nests its own.
   */
  eval(e: A.Expr, scope: Scope): Value {
    if (this.evalDepth >= MAX_EVAL_DEPTH)
      fail(
        "link",
        `expressions and the block calls inside them nest deeper than ${MAX_EVAL_DEPTH} levels`,
        e.span,
        "nest fewer blocks, or name inner parts of expressions with `let`",
      );
    this.evalDepth++;
    // one method, not a counting wrapper around another: each frame here is paid per level
    try {
      switch (e.kind) {
        case "number":
          return e.isInt ? intV(e.value) : floatV(e.value);
        case "string":
          return { kind: "string", value: e.value };
        case "bool":
          return boolV(e.value);
        case "name":
          return this.lookup(e.name, scope, e.span);
        case "list":
          return { kind: "list", items: e.items.map((x) => this.eval(x, scope)) };
        case "unary": {
          const v = this.eval(e.operand, scope);
          if (e.op === "not") {
            if (v.kind !== "bool") fail("type", `\`not\` needs a bool, got ${describeValue(v)}`, e.span);
            return boolV(!v.value);
          }
          if (v.kind === "int") return intV(dimMul(v.value, -1)!);
          if (v.kind === "float") return floatV(-v.value);
          return tensorV(this.at(e.span, () => this.ops.unary("neg", this.toTensor(v, e.operand.span))));
        }
        case "binary":
          return this.evalBinary(e, scope);
        case "if":
          return this.condition(e.cond, scope) ? this.eval(e.then, scope) : this.eval(e.else, scope);
        case "call":
          return this.evalCall(e, scope);
        case "index":
          return this.evalIndex(e, scope);
        case "member":
          return this.evalMember(e, scope);
        case "transpose": {
          const v = this.eval(e.operand, scope);
          return tensorV(this.at(e.span, () => this.ops.transposeLast(this.toTensor(v, e.operand.span))));
        }
        case "site":
          return this.evalSite(e, scope);
      }
    } finally {
      this.evalDepth--;
    }
  }

  private lookup(name: string, scope: Scope, span: Span): Value {
    const local = scope.local(name);
    if (local) return local;
    const inst = scope.inst;
    if (inst) {
      const a = inst.args.get(name);
      if (a) return a;
      const p = inst.params.get(name);
      if (p) return tensorV(this.paramNode(p, span));
      const c = inst.children.get(name);
      if (c) return Array.isArray(c) ? { kind: "list", items: c.map((x) => ({ kind: "instance", inst: x })) } : { kind: "instance", inst: c };
      if (inst.taps.has(name) && name !== "out") fail("link", `tap \`${name}\` is used before it is computed`, span);
      const declared = inst.decl.members.find((m) => (m.kind === "param" || m.kind === "instance") && m.name.name === name);
      if (declared) fail("link", `\`${name}\` is not present: its declaration's \`if\` condition is false`, span, `declared at ${this.where(declared.span)}`);
    }
    if (builtinNames.has(name)) return { kind: "builtin", name };
    if (this.program.decls.has(name)) fail("link", `\`${name}\` is a block; declare an instance of it as a member (\`x = ${name}(...)\`) and call that`, span);
    const candidates = [...scope.localNames(), ...(inst ? [...inst.args.keys(), ...inst.params.keys(), ...inst.children.keys()] : []), ...builtinNames];
    return fail("link", `unknown name \`${name}\``, span, didYouMean(name, candidates));
  }

  private paramNode(p: ParamInfo, span: Span): Node {
    return this.at(span, () => this.ops.make("param", [], { name: p.name, shape: p.shape, init: p.init, trainable: p.trainable }));
  }

  private evalMember(e: A.MemberExpr, scope: Scope): Value {
    const target = this.eval(e.target, scope);
    const name = e.member.name;
    const one = (v: Value): Value => {
      if (v.kind === "list") return { kind: "list", items: v.items.map(one) };
      if (v.kind !== "instance") return fail("type", `${describeValue(v)} has no member \`${name}\``, e.member.span);
      const inst = v.inst;
      const c = inst.children.get(name);
      if (c) return Array.isArray(c) ? { kind: "list", items: c.map((x) => ({ kind: "instance", inst: x })) } : { kind: "instance", inst: c };
      const p = inst.params.get(name);
      if (p) return tensorV(this.paramNode(p, e.member.span));
      const a = inst.args.get(name);
      if (a) return a;
      if (inst.taps.has(name)) {
        const key = `${inst.path}.${name}`;
        const t = this.taps.get(key);
        if (t === "ambiguous") fail("link", `tap \`${key}\` has more than one value: its block was called more than once`, e.member.span);
        if (!t)
          fail(
            "link",
            `tap \`${key}\` is read before it is computed`,
            e.member.span,
            `call \`${inst.path.split(".")[0]}\` earlier in the model's forward, or read a tap computed before this point`,
          );
        return tensorV(t);
      }
      if (inst.sites.has(name))
        fail(
          "link",
          `\`${name}\` is a site of \`${inst.decl.name.name}\`: sites are replaced by fusions (\`target ${inst.path}.${name}\`), not read`,
          e.member.span,
        );
      const all = [...inst.children.keys(), ...inst.params.keys(), ...inst.args.keys(), ...inst.taps];
      return fail(
        "link",
        `\`${inst.path}\` (${inst.decl.name.name}) has no member \`${name}\``,
        e.member.span,
        didYouMean(name, all) ?? `its members: ${all.join(", ")}`,
      );
    };
    return one(target);
  }

  /** `layer[2]`, `layer[-1]`, `layer[1:3]`, `layer[*]` on a repeat or list. */
  private selectList<T>(items: readonly T[], item: A.IndexItem, scope: Scope, what: string): T[] {
    const n = items.length;
    const idx = (e: A.Expr, allowEnd: boolean): number => {
      const v = this.constInt(this.eval(e, scope), "an index", e.span);
      const k = v < 0 ? v + n : v;
      if (k < 0 || k > (allowEnd ? n : n - 1))
        fail(
          "link",
          `index ${v} is out of range for \`${what}\`, which has ${n} element${n === 1 ? "" : "s"}`,
          e.span,
          `valid indices are 0..${n - 1} or -${n}..-1`,
        );
      return k;
    };
    switch (item.kind) {
      case "all":
        return [...items];
      case "at":
        return [items[idx(item.value, false)]];
      case "slice": {
        const a = item.start ? idx(item.start, true) : 0;
        const b = item.end ? idx(item.end, true) : n;
        if (b <= a) fail("link", `empty selection ${a}:${b} of \`${what}\``, item.span);
        return items.slice(a, b);
      }
      case "ellipsis":
        return fail("link", "`...` cannot select copies; use `*`", item.span);
    }
  }

  private evalIndex(e: A.IndexExpr, scope: Scope): Value {
    const target = this.eval(e.target, scope);
    if (target.kind === "list") {
      if (e.items.length !== 1) fail("type", "a list takes one index", e.span);
      const sel = this.selectList(target.items, e.items[0], scope, this.text(e.target.span));
      return e.items[0].kind === "at" ? sel[0] : { kind: "list", items: sel };
    }
    const x = this.toTensor(target, e.target.span);
    const explicit = e.items.filter((i) => i.kind !== "ellipsis").length;
    if (e.items.filter((i) => i.kind === "ellipsis").length > 1) fail("type", "an index may use `...` once", e.span);
    const rank = x.shape.length;
    if (explicit > rank) fail("shape", `too many indices (${explicit}) for a tensor of rank ${rank} ${shapeStr(x.shape)}`, e.span);
    let node = x;
    const squeeze: number[] = [];
    let axis = 0;
    for (const item of e.items) {
      if (item.kind === "ellipsis") {
        axis += rank - explicit;
        continue;
      }
      if (item.kind === "all") fail("type", "`*` selects every copy of a repeated block; for tensors use `:`", item.span);
      const dim = x.shape[axis];
      const pos = (ex: A.Expr): Dim => {
        const v = this.eval(ex, scope);
        if (v.kind === "tensor") fail("type", "indexing with a tensor is not supported here; use gather(table, index)", ex.span);
        if (v.kind !== "int") fail("type", `an index must be an int, got ${describeValue(v)}`, ex.span);
        const k = typeof v.value === "number" && v.value < 0 ? dimAdd(dim, v.value) : v.value;
        if (typeof k === "number" && typeof dim === "number" && (k < 0 || k > dim))
          fail("shape", `index ${dimStr(v.value)} is out of range for dimension ${axis} of size ${dim}`, ex.span);
        return k;
      };
      const ax = axis;
      if (item.kind === "at") {
        const k = pos(item.value);
        if (typeof k === "number" && typeof dim === "number" && k >= dim)
          fail("shape", `index ${k} is out of range for dimension ${ax} of size ${dim}`, item.span);
        node = this.at(item.span, () => this.ops.slice(node, ax, k, dimAdd(k, 1)));
        squeeze.push(ax);
      } else {
        const a = item.start ? pos(item.start) : 0;
        const b = item.end ? pos(item.end) : dim;
        node = this.at(item.span, () => this.ops.slice(node, ax, a, b));
      }
      axis++;
    }
    if (squeeze.length)
      node = this.at(e.span, () =>
        this.ops.reshape(
          node,
          node.shape.filter((_, i) => !squeeze.includes(i)),
        ),
      );
    return tensorV(node);
  }

  private evalCall(e: A.CallExpr, scope: Scope): Value {
    let callee = this.eval(e.callee, scope);
    // a value that cannot be called does not hide the builtin of its name: `dropout(x, dropout)`
    // in a block with a parameter `dropout: float`
    if (e.callee.kind === "name" && builtinNames.has(e.callee.name) && callee.kind !== "instance" && callee.kind !== "list")
      callee = { kind: "builtin", name: e.callee.name };
    const positional: ArgValue[] = [];
    const named = new Map<string, ArgValue>();
    for (const a of e.args) {
      const av = { value: this.eval(a.value, scope), span: a.span };
      if (a.name) {
        if (named.has(a.name.name)) fail("type", `argument \`${a.name.name}\` is given twice`, a.span);
        named.set(a.name.name, av);
      } else {
        if (named.size) fail("type", "positional arguments must come before named ones", a.span);
        positional.push(av);
      }
    }
    if (callee.kind === "builtin") return this.callBuiltin(callee.name, positional, named, e, scope);
    if (callee.kind === "instance") return this.callForward(callee.inst, positional, named, e.span);
    if (callee.kind === "list" && callee.items.length && callee.items.every((x) => x.kind === "instance")) {
      // A repeat applied as a function chains its copies: h = layer[0](h); h = layer[1](h); ...
      let acc = positional;
      let out: Value | undefined;
      for (const item of callee.items) {
        out = this.callForward((item as { inst: Instance }).inst, acc, named, e.span);
        acc = [{ value: out, span: e.span }, ...positional.slice(1)];
      }
      return out!;
    }
    return fail("type", `${describeValue(callee)} cannot be called`, e.callee.span);
  }

  private callBuiltin(name: string, positional: ArgValue[], named: Map<string, ArgValue>, e: A.CallExpr, scope: Scope): Value {
    const b = builtins[name];
    const variadic = b.params[0] === "...";
    if (!variadic && positional.length > b.params.length)
      fail(
        "type",
        `${name}() takes at most ${b.params.length} argument${b.params.length === 1 ? "" : "s"} (${b.params.join(", ")}), got ${positional.length}`,
        e.span,
      );
    for (const k of named.keys())
      if (!b.params.includes(k) || k === "...")
        fail(
          "type",
          `${name}() has no parameter \`${k}\``,
          named.get(k)!.span,
          didYouMean(k, b.params) ?? `its parameters: ${b.params.filter((p) => p !== "...").join(", ")}`,
        );
    if (
      b.scalar &&
      positional.length === 1 &&
      (positional[0].value.kind === "float" || (positional[0].value.kind === "int" && typeof positional[0].value.value === "number"))
    )
      return floatV(b.scalar(Number(positional[0].value.value)));
    const args = new BuiltinArgs(name, variadic ? [] : b.params, variadic ? positional : positional, named, (v, span) => this.toTensor(v, span));
    return this.at(e.span, () => b.impl(args, this.ops, this.decodingContext(scope.inst)));
  }

  /**
   * A left-deep chain (`a + b + ... + z`, thousands of terms when generated) is folded
   * in a loop from its innermost operand outwards, so its length costs no stack.
   */
  private evalBinary(e: A.BinaryExpr, scope: Scope): Value {
    const chain: A.BinaryExpr[] = [];
    let inner: A.Expr = e;
    for (; inner.kind === "binary"; inner = inner.left) chain.push(inner);
    let acc = this.eval(inner, scope);
    for (let i = chain.length - 1; i >= 0; i--) acc = this.applyBinary(chain[i], acc, scope);
    return acc;
  }

  /** `e` with its left operand already evaluated to `l`. */
  private applyBinary(e: A.BinaryExpr, l: Value, scope: Scope): Value {
    if (e.op === "and" || e.op === "or") {
      if (l.kind !== "bool") fail("type", `\`${e.op}\` needs bools, got ${describeValue(l)}`, e.left.span);
      if (e.op === "and" ? !l.value : l.value) return l;
      const r = this.eval(e.right, scope);
      if (r.kind !== "bool") fail("type", `\`${e.op}\` needs bools, got ${describeValue(r)}`, e.right.span);
      return r;
    }
    const r = this.eval(e.right, scope);
    const scalar = (v: Value) => v.kind === "int" || v.kind === "float";
    if (scalar(l) && scalar(r)) return this.scalarBinary(e, l, r);
    if ((e.op === "==" || e.op === "!=") && (l.kind === "string" || l.kind === "bool" || r.kind === "string" || r.kind === "bool")) {
      const eq = l.kind === r.kind && (l as { value: unknown }).value === (r as { value: unknown }).value;
      return boolV(e.op === "==" ? eq : !eq);
    }
    if (e.op === "%") fail("type", "`%` works on ints only", e.span);
    // Identities folded here keep `h + site m(x) default 0` free when no fusion attaches.
    const isNum = (v: Value, n: number) => (v.kind === "int" || v.kind === "float") && v.value === n;
    if ((e.op === "+" && isNum(r, 0)) || (e.op === "-" && isNum(r, 0)) || ((e.op === "*" || e.op === "/") && isNum(r, 1)))
      return tensorV(this.toTensor(l, e.left.span));
    if ((e.op === "+" && isNum(l, 0)) || (e.op === "*" && isNum(l, 1))) return tensorV(this.toTensor(r, e.right.span));
    const a = this.toTensor(l, e.left.span);
    const b = this.toTensor(r, e.right.span);
    const o = this.ops;
    return tensorV(
      this.at(e.span, () => {
        switch (e.op) {
          case "+":
            return o.add(a, b);
          case "-":
            return o.sub(a, b);
          case "*":
            return o.mul(a, b);
          case "/":
            return o.div(a, b);
          case "@":
            return o.matmul(a, b);
          case "<":
            return o.binary("cmplt", a, b);
          case ">":
            return o.binary("cmplt", b, a);
          case "<=":
            return o.not(o.binary("cmplt", b, a));
          case ">=":
            return o.not(o.binary("cmplt", a, b));
          case "==":
            return o.binary("cmpeq", a, b);
          case "!=":
            return o.not(o.binary("cmpeq", a, b));
          default:
            throw new Error(`internal: operator ${e.op}`);
        }
      }),
    );
  }

  private scalarBinary(e: A.BinaryExpr, l: Value, r: Value): Value {
    const lv = (l as { value: Dim | number }).value;
    const rv = (r as { value: Dim | number }).value;
    const bothInt = l.kind === "int" && r.kind === "int";
    const sym = typeof lv !== "number" || typeof rv !== "number";
    // Ints stay exact: a result a double cannot hold is refused, like a literal that large.
    const exact = (v: Dim): Value => {
      if (typeof v === "number" && !Number.isSafeInteger(v))
        fail("type", `${dimStr(lv)} ${e.op} ${dimStr(rv)} is beyond ${Number.MAX_SAFE_INTEGER} (2^53 - 1), the largest exact integer`, e.span);
      return intV(v);
    };
    const needConst = (): [number, number] => {
      if (sym) fail("type", `\`${e.op}\` on a symbolic dimension (${dimStr(lv)} ${e.op} ${dimStr(rv)}) is not supported`, e.span);
      return [lv as number, rv as number];
    };
    switch (e.op) {
      case "+":
      case "-":
        if (bothInt) return exact(e.op === "+" ? dimAdd(lv, rv) : dimSub(lv, rv));
        return floatV(e.op === "+" ? needConst()[0] + needConst()[1] : needConst()[0] - needConst()[1]);
      case "*": {
        if (bothInt) {
          const m = dimMul(lv, rv);
          if (m === undefined) fail("type", `cannot multiply two symbolic dimensions (${dimStr(lv)} * ${dimStr(rv)})`, e.span);
          return exact(m);
        }
        const [a, b] = needConst();
        return floatV(a * b);
      }
      case "/": {
        if (bothInt && typeof rv === "number") {
          const q = dimDivExact(lv, rv);
          if (q !== undefined) return intV(q);
          if (typeof lv !== "number") fail("shape", `${dimStr(lv)} is not divisible by ${rv}`, e.span);
          if (rv === 0) fail("type", "division by zero", e.span);
          return floatV(lv / rv);
        }
        const [a, b] = needConst();
        if (b === 0) fail("type", "division by zero", e.span);
        return floatV(a / b);
      }
      case "%": {
        const [a, b] = needConst();
        if (!bothInt || b === 0) fail("type", "`%` needs a non-zero int divisor", e.span);
        return intV(((a % b) + b) % b);
      }
      case "@":
        return fail("type", "`@` needs tensors", e.span);
      default: {
        if (bothInt && (e.op === "==" || e.op === "!=")) {
          const eq = dimEq(lv, rv);
          return boolV(e.op === "==" ? eq : !eq);
        }
        const [a, b] = needConst();
        const res = e.op === "<" ? a < b : e.op === ">" ? a > b : e.op === "<=" ? a <= b : e.op === ">=" ? a >= b : e.op === "==" ? a === b : a !== b;
        return boolV(res);
      }
    }
  }
}

/** Links every loaded file, then elaborates the named model (default: the entry file's first). */
export function elaborate(program: Program, modelName?: string, options: ElaborateOptions = {}): CompiledModel {
  const linkErrors = link(program);
  if (linkErrors.length) throw new DehvfError(linkErrors).withSources(program.sources);
  const models = program.entry.decls.filter((d) => d.kind === "model");
  let model: A.BlockDecl | undefined;
  if (modelName) {
    model = [...program.decls.values()].find((d) => d.kind === "model" && d.name.name === modelName);
    if (!model) {
      const names = [...program.decls.values()].filter((d) => d.kind === "model").map((d) => d.name.name);
      throw new DehvfError([
        {
          phase: "input",
          message: `no model \`${modelName}\` in ${program.entry.path}`,
          hint: didYouMean(modelName, names) ?? `models: ${names.join(", ") || "none"}`,
        },
      ]).withSources(program.sources);
    }
  } else model = models[0];
  if (!model)
    throw new DehvfError([
      { phase: "input", message: `${program.entry.path} declares no \`model\``, hint: "add `model Name { ... }`, or pass a file that has one" } as Diagnostic,
    ]).withSources(program.sources);
  try {
    return new Elaborator(program, options).elaborateModel(model);
  } catch (e) {
    if (e instanceof DehvfError) e.withSources(program.sources);
    throw e;
  }
}

export function modelNames(program: Program): string[] {
  return program.entry.decls.filter((d) => d.kind === "model").map((d) => d.name.name);
}
