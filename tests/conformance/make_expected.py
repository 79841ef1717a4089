"""Writes cases/*/expected.json from cases/*/request.txt: the conformance preprocessing (README.md)
implemented independently of every SDK, in plain Python. Run it after adding a case:
    python3 tests/conformance/make_expected.py
"""
import json
import pathlib
import re
import struct

VOCAB = "the a model is good bad not very fast slow data ai".split()
MEAN = [10.0, 0.5, 100.0, -3.0]
SCALE = [2.0, 0.25, 50.0, 4.0]
DECIMAL = re.compile(rb"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def preprocess(body: bytes):
    if body.startswith(b"text:"):
        lowered = bytes(b + 32 if 65 <= b <= 90 else b for b in body[5:])  # ASCII letters only
        words = re.findall(rb"[a-z0-9]+", lowered)
        ids = [VOCAB.index(w.decode()) + 2 if w.decode() in VOCAB else 1 for w in words][:8]
        mask = [1] * len(ids) + [0] * (8 - len(ids))
        ids += [0] * (8 - len(ids))
        return {"tensors": [
            {"name": "ids", "dtype": "i64", "shape": [1, 8], "data": ids},
            {"name": "mask", "dtype": "i64", "shape": [1, 8], "data": mask},
        ]}
    if body.startswith(b"nums:"):
        fields = body[5:].split(b",")
        if len(fields) != 4 or not all(DECIMAL.fullmatch(f) for f in fields):
            return {"error": "bad_request"}
        data = [f32((float(f) - m) / s) for f, m, s in zip(fields, MEAN, SCALE)]
        return {"tensors": [{"name": "features", "dtype": "f32", "shape": [1, 4], "data": data}]}
    return {"error": "bad_request"}


for case in sorted((pathlib.Path(__file__).parent / "cases").iterdir()):
    expected = preprocess((case / "request.txt").read_bytes())
    (case / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(case.name, json.dumps(expected)[:100])
