/** Linear warm-up to `peak`, then cosine decay to `peak * minRatio` at `total` (steps are 1-based). */
export function learningRate(step: number, total: number, peak: number, warmup: number, minRatio = 0.1): number {
  if (warmup > 0 && step <= warmup) return (peak * step) / warmup;
  const span = Math.max(1, total - warmup);
  const progress = Math.min(1, Math.max(0, (step - warmup) / span));
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}
