/**
 * Dimensions are integers or linear forms over run-time symbols (batch `B`,
 * sequence `T`, ...): `T + 256` arises when a concat model prepends visual tokens.
 * Products of symbols never occur in our shapes, so linear forms are closed enough.
 */
export type Dim = number | SymDim;

export class SymDim {
  /** terms sorted by symbol name; coefficients never zero */
  private constructor(
    readonly terms: readonly (readonly [string, number])[],
    readonly constant: number,
  ) {}

  static of(terms: Map<string, number>, constant: number): Dim {
    const sorted = [...terms].filter(([, c]) => c !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return sorted.length === 0 ? constant : new SymDim(sorted, constant);
  }

  toString(): string {
    const parts: string[] = [];
    for (const [name, c] of this.terms) {
      const mag = Math.abs(c) === 1 ? name : `${Math.abs(c)}*${name}`;
      parts.push(parts.length === 0 ? (c < 0 ? `-${mag}` : mag) : c < 0 ? ` - ${mag}` : ` + ${mag}`);
    }
    if (this.constant !== 0) parts.push(this.constant < 0 ? ` - ${-this.constant}` : ` + ${this.constant}`);
    return parts.join("");
  }
}

export type Shape = readonly Dim[];

export const sym = (name: string): Dim => SymDim.of(new Map([[name, 1]]), 0);

function linear(d: Dim): { terms: Map<string, number>; constant: number } {
  return typeof d === "number" ? { terms: new Map(), constant: d } : { terms: new Map(d.terms), constant: d.constant };
}

export function dimAdd(a: Dim, b: Dim, sign = 1): Dim {
  if (typeof a === "number" && typeof b === "number") return a + sign * b;
  const la = linear(a);
  const lb = linear(b);
  for (const [n, c] of lb.terms) la.terms.set(n, (la.terms.get(n) ?? 0) + sign * c);
  return SymDim.of(la.terms, la.constant + sign * lb.constant);
}

export const dimSub = (a: Dim, b: Dim): Dim => dimAdd(a, b, -1);

/** Multiplication; undefined when both sides are symbolic (not linear any more). */
export function dimMul(a: Dim, b: Dim): Dim | undefined {
  if (typeof a === "number" && typeof b === "number") return a * b;
  if (typeof a !== "number" && typeof b !== "number") return undefined;
  const [s, k] = typeof a === "number" ? [b as SymDim, a] : [a, b as number];
  return SymDim.of(new Map(s.terms.map(([n, c]) => [n, c * k])), s.constant * k);
}

/** Exact division by an integer; undefined when it does not divide. */
export function dimDivExact(a: Dim, k: number): Dim | undefined {
  if (k === 0 || !Number.isInteger(k)) return undefined;
  const l = linear(a);
  if (l.constant % k !== 0) return undefined;
  for (const c of l.terms.values()) if (c % k !== 0) return undefined;
  return SymDim.of(new Map([...l.terms].map(([n, c]) => [n, c / k])), l.constant / k);
}

export function dimEq(a: Dim, b: Dim): boolean {
  if (typeof a === "number" || typeof b === "number") return a === b;
  return a.toString() === b.toString();
}

export const shapeEq = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((d, i) => dimEq(d, b[i]));

export const dimStr = (d: Dim): string => (typeof d === "number" ? String(d) : d.toString());
export const shapeStr = (s: Shape): string => `[${s.map(dimStr).join(", ")}]`;

export function dimEval(d: Dim, env: Readonly<Record<string, number>>): number {
  if (typeof d === "number") return d;
  let v = d.constant;
  for (const [n, c] of d.terms) {
    const x = env[n];
    if (x === undefined) throw new Error(`no value for dimension symbol ${n}`);
    v += c * x;
  }
  return v;
}

export const shapeEval = (s: Shape, env: Readonly<Record<string, number>>): number[] => s.map((d) => dimEval(d, env));

/**
 * Element count as (constant, multiset of symbolic factors), so reshape can check
 * `[B, N, h, dh]` against `[B, N, d]` without knowing B.
 */
export function numelKey(s: Shape): string {
  let k = 1;
  const factors: string[] = [];
  for (const d of s) {
    if (typeof d === "number") k *= d;
    else {
      // pull the integer content out, so `[2*T]` (repeat_interleave) matches `[T, 2]`
      const g = d.terms.reduce((acc, [, c]) => gcd(acc, c), d.constant);
      k *= g;
      factors.push(dimStr(dimDivExact(d, g)!));
    }
  }
  if (k === 0) return "0";
  return [k, ...factors.sort()].join("*");
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return Math.abs(a);
}

export function symbolsOf(s: Shape): string[] {
  const out = new Set<string>();
  for (const d of s) if (typeof d !== "number") for (const [n] of d.terms) out.add(n);
  return [...out];
}
