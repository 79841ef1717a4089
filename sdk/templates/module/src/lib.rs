//! Preprocessing: the body's byte and word counts as the model's input `x` [1, 2].
//! Postprocessing: the model's `score` as `{"score": …}`.
use aifn_sdk::{output, Error, Function, Request, Response, Tensor};
use std::collections::BTreeMap;

struct Template;

impl Function for Template {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        let text = std::str::from_utf8(&req.body)
            .map_err(|_| Error::bad_request("the body must be UTF-8 text"))?;
        if text.trim().is_empty() {
            return Err(Error::bad_request("send some text"));
        }
        let words = text.split_whitespace().count();
        Ok(vec![Tensor::f32("x", vec![1, 2], vec![text.len() as f32, words as f32])])
    }

    fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        let score = output(&outputs, "score")?
            .as_f32()
            .and_then(|s| s.first().copied())
            .ok_or_else(|| Error::internal("`score` is not an f32 tensor"))?;
        Response::json(&BTreeMap::from([("score", score)])).map(Some)
    }
}

aifn_sdk::export!(Template);
