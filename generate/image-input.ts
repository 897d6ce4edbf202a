import type { CompiledModel } from "../compiler/elaborate.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { decodeImageInto } from "../data/images.ts";
import { imageForm } from "../data/preprocess.ts";
import { UserError } from "../grammar/diagnostics.ts";

/** One image for the model's input `image: [B, C, H, W]`, at batch 1, prepared as its training data was (data/preprocess.ts). */
export async function modelImage(model: CompiledModel, path: string): Promise<Tensor> {
  const form = imageForm(model);
  if (!form) throw new UserError(`model \`${model.name}\` takes no image`);
  const out = new Float32Array(form.shape[0] * form.shape[1] * form.shape[2]);
  await decodeImageInto(path, form, out, 0);
  return tensor([1, ...form.shape], out);
}
