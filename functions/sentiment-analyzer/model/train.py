#!/usr/bin/env python3
"""Trains the sentiment analyzer's classifier head on all-MiniLM-L6-v2 sentence embeddings.

Data: the UCI "Sentiment Labelled Sentences" set (Kotzias et al., KDD 2015; 3,000 review sentences
from Amazon, IMDb and Yelp, each labelled positive or negative by people, 500 of each per site),
as shipped in the npm package `sentiment@5.0.2` (MIT; `test/fixtures/{amazon,imdb,yelp}.json`).

A held-out set of 300 sentences (50 positive and 50 negative per site, chosen with a fixed seed)
is never trained on; it is written to `../tests/heldout.jsonl` with the label and this script's
predicted probability, and the host's answers are tested against both. The head is logistic
regression on the L2-normalised mean-pooled embeddings (the text-embedder's output), its
regularisation chosen by 5-fold cross-validation on the training sentences. Writes `head.json`
(weights, bias, accuracy), from which `build.py` makes `sentiment.onnx`.

Run after ./scripts/setup.sh (model and tokenizer fetched), with npm on the PATH:
    .venv/bin/pip install tokenizers==0.23.3
    .venv/bin/python functions/sentiment-analyzer/model/train.py
"""
import hashlib
import warnings
import json
import random
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime
from sklearn.linear_model import LogisticRegressionCV
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
EMBEDDER = ROOT / "functions" / "text-embedder" / "model"
CACHE = ROOT / ".cache" / "npm"
PACKAGE = "sentiment@5.0.2"
TARBALL = "sentiment-5.0.2.tgz"
TARBALL_SHA256 = "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f"
SITES = ["amazon", "imdb", "yelp"]
HELD_OUT_PER_CLASS_PER_SITE = 50
SEED = 20261125


def labelled_sentences() -> list:
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / TARBALL
    if not tarball.exists():
        subprocess.run(["npm", "pack", PACKAGE, "--silent", "--pack-destination", str(CACHE)], check=True)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise SystemExit(f"{tarball} has sha256 {digest}, expected {TARBALL_SHA256}")
    rows, seen = [], set()
    with tarfile.open(tarball) as archive:
        for site in SITES:
            for row in json.load(archive.extractfile(f"package/test/fixtures/{site}.json")):
                text = row["text"].strip()
                # Each file ends with an empty, unlabelled row; a few sentences repeat.
                if row["class"] is None or not text or text in seen:
                    continue
                seen.add(text)
                rows.append({"site": site, "text": text, "label": "positive" if row["class"] == 1 else "negative"})
    return rows


def split(rows: list) -> tuple:
    rng = random.Random(SEED)
    held_out = []
    for site in SITES:
        for label in ["negative", "positive"]:
            group = [r for r in rows if r["site"] == site and r["label"] == label]
            held_out += rng.sample(group, HELD_OUT_PER_CLASS_PER_SITE)
    held = {id(r) for r in held_out}
    return [r for r in rows if id(r) not in held], held_out


def embed(texts: list) -> np.ndarray:
    tokenizer = Tokenizer.from_file(str(EMBEDDER / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    session = onnxruntime.InferenceSession(str(EMBEDDER / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        pooled = session.run(["last_hidden_state"], feeds)[0][0].mean(axis=0)
        out.append(pooled / max(np.linalg.norm(pooled), 1e-12))
    return np.stack(out)


def main() -> None:
    warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices of future defaults
    rows = labelled_sentences()
    train, held_out = split(rows)
    y_train = np.array([r["label"] == "positive" for r in train], dtype=int)
    y_held = np.array([r["label"] == "positive" for r in held_out], dtype=int)
    print(f"{len(rows)} labelled sentences: {len(train)} to train, {len(held_out)} held out")

    x_train = embed([r["text"] for r in train])
    x_held = embed([r["text"] for r in held_out])
    model = LogisticRegressionCV(Cs=np.logspace(-2, 3, 12), cv=5, max_iter=5000).fit(x_train, y_train)
    p_held = model.predict_proba(x_held)[:, 1]
    accuracy = float(((p_held >= 0.5).astype(int) == y_held).mean())
    train_accuracy = float(model.score(x_train, y_train))
    print(f"C={model.C_[0]:.3g} train accuracy {train_accuracy:.3f}, held-out accuracy {accuracy:.3f}")

    head = {
        "about": "logistic regression on all-MiniLM-L6-v2 (int8) embeddings; made by train.py",
        "data": "UCI Sentiment Labelled Sentences (Kotzias et al. 2015) from npm sentiment@5.0.2",
        "classes": ["negative", "positive"],
        "weights": [float(w) for w in model.coef_[0]],
        "bias": float(model.intercept_[0]),
        "C": float(model.C_[0]),
        "train_sentences": len(train),
        "train_accuracy": round(train_accuracy, 4),
        "held_out_sentences": len(held_out),
        "held_out_accuracy": round(accuracy, 4),
    }
    (HERE / "head.json").write_text(json.dumps(head, indent=1) + "\n")
    with open(HERE.parent / "tests" / "heldout.jsonl", "w", encoding="utf-8") as f:
        for row, p in zip(held_out, p_held):
            f.write(json.dumps({"text": row["text"], "label": row["label"], "site": row["site"],
                                "p_positive": round(float(p), 6)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
