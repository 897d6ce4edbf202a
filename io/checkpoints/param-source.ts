import type { Transform } from "./transforms.ts";

/** Where a parameter's value comes from when a checkpoint provides it (`from "..."` on an enclosing instance). */
export interface ParamSource {
  /** the checkpoint, absolute */
  readonly file: string;
  /** as the model file names it (relative to that file) */
  readonly written: string;
  readonly family: string;
  /** the checkpoint tensor */
  readonly tensor: string;
  /** the family table's name for it, `{l}` in place of the layer ("layers.{l}.attention.wq.weight") */
  readonly pattern: string;
  /** how the stored tensor becomes the parameter (io/checkpoints/transforms.ts) */
  readonly transform?: Transform;
}
