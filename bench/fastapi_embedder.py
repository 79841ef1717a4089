#!/usr/bin/env python3
"""The text-embedder as a user would write it by hand: FastAPI + uvicorn + onnxruntime, with the
same model, the same tokenizer (Hugging Face `tokenizers`, the model's own tokenizer.json) and the
same request and response shapes as aifn's `functions/text-embedder`. The baseline of
bench/embedder_vs_fastapi.sh.

    .venv/bin/python bench/fastapi_embedder.py --port 8001
"""
import argparse
from pathlib import Path
from typing import List, Union

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer

MODEL = Path(__file__).resolve().parent.parent / "functions" / "text-embedder" / "model"

tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
tokenizer.enable_truncation(256)
tokenizer.enable_padding()  # to the longest text of a list
session = onnxruntime.InferenceSession(str(MODEL / "model.onnx"), providers=["CPUExecutionProvider"])
app = FastAPI()


class EmbedRequest(BaseModel):
    inputs: Union[str, List[str]]


@app.post("/v1/embeddings")
def embed(request: EmbedRequest):
    # A plain `def` runs in FastAPI's thread pool; onnxruntime releases the GIL while it computes.
    texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    hidden = session.run(
        ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )[0]
    summed = (hidden * mask[..., None]).sum(axis=1)
    pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    embeddings = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    tokens = mask.sum(axis=1).tolist()
    if isinstance(request.inputs, str):
        return {"embedding": embeddings[0].tolist(), "dimension": 384, "tokens": tokens[0]}
    return {"embeddings": embeddings.tolist(), "dimension": 384, "tokens": tokens}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    else:
        uvicorn.run("fastapi_embedder:app", host="127.0.0.1", port=args.port, workers=args.workers,
                    log_level="warning", access_log=False, app_dir=str(Path(__file__).parent))
