import type { Tensor } from "../compiler/tensor.ts";
import { saveCheckpoint } from "./checkpoint.ts";

/** Lets the tests kill the process for real (SIGKILL: no cleanup runs) at a named point of a stage. */
export function killPoint(stage: string, point: string): void {
  if (process.env.DEHVF_KILL_AT === `${stage}:${point}`) process.kill(process.pid, "SIGKILL");
}

/**
 * Writes a checkpoint only once its state has proven good: every value finite, and the
 * next step's forward and backward pass from those weights gave a finite loss and
 * gradient (the last step's, which has no next step, once it is finite). Weights that are
 * finite but already wrecked (1e16 after a huge learning rate) fail the second test, so
 * after a divergence the checkpoint left on disk is one a lower learning rate can resume.
 */
export class GoodCheckpoints {
  private pending: { step: number; state: ReadonlyMap<string, Tensor> } | undefined;

  constructor(
    private readonly workDir: string,
    private readonly stage: string,
    private readonly meta: (step: number) => Record<string, string>,
    /** the step of the checkpoint on disk (the resumed one, or 0: none) */
    public lastSaved: number,
  ) {}

  /** State read after `step`; returns the name of a tensor that is not finite, if one is (nothing is kept then). */
  async offer(step: number, state: ReadonlyMap<string, Tensor>, last: boolean): Promise<string | undefined> {
    // never trust what comes back: the moments can overflow while the weights are still finite
    const bad = [...state].find(([, t]) => !t.data.every(Number.isFinite));
    if (bad) return bad[0];
    this.pending = { step, state };
    if (last) await this.confirm();
    return undefined;
  }

  /** The step after the pending state gave a finite loss and gradient: write it. */
  async confirm(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    await saveCheckpoint(this.workDir, p.state, this.meta(p.step));
    this.lastSaved = p.step;
    killPoint(this.stage, `checkpoint-${p.step}`);
  }

  /** The step after the pending state diverged: it is not good. */
  discard(): void {
    this.pending = undefined;
  }
}
