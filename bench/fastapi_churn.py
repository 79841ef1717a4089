#!/usr/bin/env python3
"""The churn predictor as a user would write it by hand: FastAPI + uvicorn + onnxruntime, the same
model, the same features from the same JSON (aifn's `functions/churn-predictor` module does this in
WASM) and the same answer. The baseline of bench/module_vs_v2.sh.

    .venv/bin/python bench/fastapi_churn.py --port 8002
"""
import argparse
from pathlib import Path
from typing import List, Optional

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

MODEL = Path(__file__).resolve().parent.parent / "functions" / "churn-predictor" / "model" / "churn.onnx"
TIERS = ["basic", "standard", "premium"]
MAX_BATCH = 1024

options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1  # the function's `resources.cpu`
session = onnxruntime.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
app = FastAPI()


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    avg_monthly_spend: float
    days_since_last_purchase: float
    support_tickets_last_30d: float
    subscription_tier: str


class Body(BaseModel):
    customers: Optional[List[Customer]] = None


def features(index: Optional[int], c: Customer) -> List[float]:
    at = (lambda f: f"customers[{index}].{f}") if index is not None else (lambda f: f)
    row = []
    for field, value, top in [
        ("avg_monthly_spend", c.avg_monthly_spend, 1e9),
        ("days_since_last_purchase", c.days_since_last_purchase, 36_500.0),
        ("support_tickets_last_30d", c.support_tickets_last_30d, 1e6),
    ]:
        if not 0.0 <= value <= top:
            raise HTTPException(400, f"{at(field)} must be between 0 and {top}, got {value}")
        row.append(value)
    if c.subscription_tier not in TIERS:
        raise HTTPException(400, f"{at('subscription_tier')} must be one of {', '.join(TIERS)}")
    row.extend(1.0 if t == c.subscription_tier else 0.0 for t in TIERS)
    return row


@app.post("/v1/churn")
def churn(body: dict):
    # A plain `def` runs in FastAPI's thread pool; onnxruntime releases the GIL while it computes.
    batch = "customers" in body
    customers = Body(**body).customers if batch else [Customer(**body)]
    if not customers or len(customers) > MAX_BATCH:
        raise HTTPException(400, f"a batch holds 1 to {MAX_BATCH} customers")
    rows = [features(i if batch else None, c) for i, c in enumerate(customers)]
    probabilities = session.run(["probabilities"], {"features": np.array(rows, dtype=np.float32)})[0]
    predictions = [{"churn_probability": float(p[1]), "will_churn": bool(p[1] >= 0.5)} for p in probabilities]
    return {"predictions": predictions} if batch else predictions[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
