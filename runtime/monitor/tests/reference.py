"""Independent figures for runtime/monitor/tests/python_reference.rs: reads histograms and labelled
predictions as JSON on stdin and prints PSI, KL and JS (numpy/scipy) and classification and
regression metrics (scikit-learn) as JSON."""
import json
import sys

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn import metrics

PSEUDO = 0.5  # the additive smoothing documented in runtime/monitor/src/divergence.rs

case = json.load(sys.stdin)
out = {"histograms": [], "classification": None, "regression": None}
for reference, live in case["histograms"]:
    r, l = np.asarray(reference, float), np.asarray(live, float)
    rs, ls = (r + PSEUDO) / (r + PSEUDO).sum(), (l + PSEUDO) / (l + PSEUDO).sum()
    out["histograms"].append({
        "psi": float(np.sum((ls - rs) * np.log(ls / rs))),
        "kl": float(entropy(ls, rs)),
        "js": float(jensenshannon(r / r.sum(), l / l.sum(), base=2)),
    })
scores, labels = np.asarray(case["scores"]), np.asarray(case["labels"])
predicted = (scores >= 0.5).astype(int)
out["classification"] = {
    "accuracy": metrics.accuracy_score(labels, predicted),
    "precision": metrics.precision_score(labels, predicted, zero_division=0),
    "recall": metrics.recall_score(labels, predicted, zero_division=0),
    "f1": metrics.f1_score(labels, predicted, zero_division=0),
    "roc_auc": metrics.roc_auc_score(labels, scores),
}
values, targets = np.asarray(case["values"]), np.asarray(case["targets"])
out["regression"] = {
    "mae": metrics.mean_absolute_error(targets, values),
    "rmse": float(np.sqrt(metrics.mean_squared_error(targets, values))),
}
json.dump(out, sys.stdout)
