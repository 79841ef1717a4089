"""The conformance suite's preprocessing (tests/conformance/README.md) with the Python SDK."""

import re

import aifn

LENGTH = 8
VOCABULARY = {word: i + 2 for i, word in enumerate("the a model is good bad not very fast slow data ai".split())}
MEAN = (10.0, 0.5, 100.0, -3.0)
SCALE = (2.0, 0.25, 50.0, 4.0)
WORD = re.compile(rb"[A-Za-z0-9]+")
DECIMAL = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def tokenize(text: bytes) -> list:
    words = WORD.findall(text)[:LENGTH]
    ids = [VOCABULARY.get(w.lower().decode(), 1) for w in words]
    mask = [1] * len(ids)
    padding = [0] * (LENGTH - len(ids))
    return [aifn.i64("ids", [1, LENGTH], ids + padding), aifn.i64("mask", [1, LENGTH], mask + padding)]


def scale(numbers: bytes) -> list:
    fields = numbers.split(b",")
    if len(fields) != 4 or not all(DECIMAL.fullmatch(f) for f in fields):
        raise aifn.BadRequest("nums: expects four decimal numbers")
    features = [(float(x) - m) / s for x, m, s in zip(fields, MEAN, SCALE)]
    return [aifn.f32("features", [1, 4], features)]


def preprocess(req: aifn.Request) -> list:
    if req.body.startswith(b"text:"):
        return tokenize(req.body[5:])
    if req.body.startswith(b"nums:"):
        return scale(req.body[5:])
    raise aifn.BadRequest("the body starts with `text:` or `nums:`")
