"""Preprocessing: the body's byte and word counts as the model's input `x` [1, 2].
Postprocessing: the model's `score` as {"score": ...}."""

import aifn


def preprocess(req: aifn.Request) -> list:
    text = req.text()
    words = len(text.split())
    if words == 0:
        raise aifn.BadRequest("send some text")
    return [aifn.f32("x", [1, 2], [len(req.body), words])]


def postprocess(req: aifn.Request, outputs: aifn.Outputs) -> aifn.Response:
    return aifn.json({"score": outputs.f32("score")[0]})
