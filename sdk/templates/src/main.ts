// Preprocessing: the body's byte and word counts as the model's input `x` [1, 2].
// Postprocessing: the model's `score` as {"score": …}.
import { Request, Tensors, Outputs, Answer, Failure, badRequest, internal } from "aifn";

function isSpace(b: u8): bool {
  return b == 0x20 || (b >= 0x09 && b <= 0x0d);
}

export function preprocess(req: Request, out: Tensors): Failure | null {
  let words = 0;
  for (let i = 0; i < req.body.length; i++) {
    if (!isSpace(req.body[i]) && (i == 0 || isSpace(req.body[i - 1]))) words++;
  }
  if (words == 0) return badRequest("send some text");
  out.pushF32("x", [1, 2], [<f32>req.body.length, <f32>words]);
  return null;
}

export function postprocess(req: Request, outputs: Outputs, answer: Answer): Failure | null {
  const score = outputs.f32s("score");
  if (score == null || score.length == 0) return internal("the model gave no f32 `score`");
  answer.json(200, `{"score":${score[0]}}`);
  return null;
}
