#!/usr/bin/env python3
"""Trains the churn predictor on synthetic data and exports it to ONNX.

The data is synthetic and documented here so anyone can regenerate it (seed 42, 5,000 customers):

  avg_monthly_spend         lognormal(mean=ln 60, sigma=0.6), in currency units per month
  days_since_last_purchase  exponential(scale=30), clipped to [0, 365]
  support_tickets_last_30d  Poisson(0.8)
  subscription_tier         basic 50%, standard 30%, premium 20%

  churn ~ Bernoulli(sigmoid(-1.2 + 0.035*days - 0.012*spend + 0.45*tickets + tier_effect))
  tier_effect: basic +0.4, standard 0, premium -0.8

The model is a scikit-learn pipeline (StandardScaler + LogisticRegression) over six float features, in
this order: spend, days, tickets, then the tier one-hot (basic, standard, premium). The WASM
preprocessing module turns a JSON request into exactly this [N, 6] float tensor named `features`.

Outputs: churn.onnx (inputs `features` f32 [N,6]; outputs `label` i64 [N], `probabilities` f32 [N,2])
and expected.json: requests with the probabilities onnxruntime computes for them in Python, which the
integration tests compare the host's answers against (to 1e-5). Also:
- churn_fallback.onnx: a simpler model (a depth-3 decision tree) with the same inputs and outputs,
  which `spec.fallback` serves while drift holds the traffic off the main model;
- reference.jsonl: 1,000 held-out customers as requests, with the model's outputs for them, the
  reference that `spec.monitoring` compares live traffic with.
"""
import json
import pathlib

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

HERE = pathlib.Path(__file__).resolve().parent
TIERS = ["basic", "standard", "premium"]
TIER_EFFECT = {"basic": 0.4, "standard": 0.0, "premium": -0.8}


def features(spend, days, tickets, tier):
    return [float(spend), float(days), float(tickets)] + [1.0 if tier == t else 0.0 for t in TIERS]


def synthetic(n, rng):
    spend = rng.lognormal(np.log(60), 0.6, n)
    days = np.clip(rng.exponential(30, n), 0, 365)
    tickets = rng.poisson(0.8, n)
    tier = rng.choice(TIERS, n, p=[0.5, 0.3, 0.2])
    logit = -1.2 + 0.035 * days - 0.012 * spend + 0.45 * tickets + np.array([TIER_EFFECT[t] for t in tier])
    churn = rng.random(n) < 1 / (1 + np.exp(-logit))
    x = np.array([features(*row) for row in zip(spend, days, tickets, tier)], dtype=np.float32)
    return x, churn.astype(np.int64)


def export(model, x_train, path):
    onx = to_onnx(
        model,
        x_train[:1],
        options={id(model.steps[-1][1] if hasattr(model, "steps") else model): {"zipmap": False}},
        target_opset=17,
        final_types=None,
    )
    # Name the input for the module, and let the batch dimension vary.
    onx.graph.input[0].name = "features"
    for node in onx.graph.node:
        node.input[:] = ["features" if i == "X" else i for i in node.input]
    onx.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path.write_bytes(onx.SerializeToString())


def request_of(row):
    """The request body a customer's feature row came from."""
    tier = TIERS[int(np.argmax(row[3:]))]
    return {
        "avg_monthly_spend": round(float(row[0]), 2),
        "days_since_last_purchase": round(float(row[1]), 1),
        "support_tickets_last_30d": int(row[2]),
        "subscription_tier": tier,
    }


def write_reference(x_test, session):
    rows = x_test[:1000]
    features = np.array([features_of(request_of(r)) for r in rows], dtype=np.float32)
    label, probabilities = session.run(None, {"features": features})
    with open(HERE / "reference.jsonl", "w") as out:
        for row, l, p in zip(rows, label, probabilities):
            example = {"request": request_of(row), "outputs": {"label": [int(l)], "probabilities": [round(float(v), 6) for v in p]}}
            out.write(json.dumps(example) + "\n")


def features_of(request):
    return features(request["avg_monthly_spend"], request["days_since_last_purchase"], request["support_tickets_last_30d"], request["subscription_tier"])


def main():
    rng = np.random.default_rng(42)
    x, y = synthetic(5000, rng)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    print(f"held-out ROC AUC: {auc:.3f} on {len(y_test)} customers")

    export(model, x_train, HERE / "churn.onnx")

    fallback = DecisionTreeClassifier(max_depth=3, random_state=42).fit(x_train, y_train)
    fallback_auc = roc_auc_score(y_test, fallback.predict_proba(x_test)[:, 1])
    print(f"fallback (depth-3 tree) held-out ROC AUC: {fallback_auc:.3f}")
    export(fallback, x_train, HERE / "churn_fallback.onnx")

    session = ort.InferenceSession(str(HERE / "churn.onnx"), providers=["CPUExecutionProvider"])
    customers = [
        {"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"},
        {"avg_monthly_spend": 15.0, "days_since_last_purchase": 120, "support_tickets_last_30d": 4, "subscription_tier": "basic"},
        {"avg_monthly_spend": 250.0, "days_since_last_purchase": 2, "support_tickets_last_30d": 0, "subscription_tier": "standard"},
        {"avg_monthly_spend": 60.0, "days_since_last_purchase": 45.5, "support_tickets_last_30d": 2, "subscription_tier": "standard"},
        {"avg_monthly_spend": 0.0, "days_since_last_purchase": 365, "support_tickets_last_30d": 9, "subscription_tier": "basic"},
    ]
    cases = []
    for c in customers:
        f = np.array([features(c["avg_monthly_spend"], c["days_since_last_purchase"], c["support_tickets_last_30d"], c["subscription_tier"])], dtype=np.float32)
        label, probabilities = session.run(None, {"features": f})
        cases.append({
            "request": c,
            "features": f[0].tolist(),
            "churn_probability": float(probabilities[0][1]),
            "label": int(label[0]),
        })
    (HERE / "expected.json").write_text(json.dumps({"held_out_auc": round(auc, 4), "cases": cases}, indent=2) + "\n")
    write_reference(x_test, session)
    print(f"wrote churn.onnx, churn_fallback.onnx, expected.json and reference.jsonl in {HERE}")


if __name__ == "__main__":
    main()
