import type { Instance, Value } from "./values.ts";

/** Lexical scope of a forward body or argument list; falls back to its instance's names. */
export class Scope {
  readonly vars = new Map<string, Value>();
  constructor(
    readonly inst: Instance | undefined,
    readonly parent?: Scope,
  ) {}

  /** a variable bound by let, a forward parameter or a shape pattern */
  local(name: string): Value | undefined {
    for (let s: Scope | undefined = this; s; s = s.parent) {
      const v = s.vars.get(name);
      if (v) return v;
    }
    return undefined;
  }

  /** names bound so far, innermost first, for "did you mean" */
  localNames(): string[] {
    const out: string[] = [];
    for (let s: Scope | undefined = this; s; s = s.parent) out.push(...s.vars.keys());
    return out;
  }

  child(): Scope {
    return new Scope(this.inst, this);
  }
}
