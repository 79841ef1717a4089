"""aifn Python SDK: write a function's preprocessing (and optional postprocessing) in Python.

A function module is a Python file with a `preprocess` function and, optionally, `postprocess`:

    import aifn

    def preprocess(req: aifn.Request) -> list[aifn.Tensor]:
        text = req.text()
        if not text:
            raise aifn.BadRequest("send some text")
        return [aifn.f32("x", [1, 1], [float(len(text))])]

    def postprocess(req: aifn.Request, outputs: aifn.Outputs) -> aifn.Response | None:
        score = outputs.f32("y")[0]
        return aifn.json({"score": score})

Build it with `sdk/python/build.sh OUT.wasm app.py` (componentize-py). Raising `aifn.BadRequest`
answers HTTP 400 with its message; any other exception answers HTTP 500 and names it.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

__all__ = [
    "BadRequest",
    "Outputs",
    "Request",
    "Response",
    "Tensor",
    "bool_",
    "f32",
    "f64",
    "i32",
    "i64",
    "json",
    "log",
    "string",
    "u8",
]


class BadRequest(Exception):
    """The caller sent something the function cannot use: the host answers HTTP 400."""


@dataclass(frozen=True)
class Request:
    """The HTTP request that reached the endpoint. Header names are lower case."""

    route: str
    method: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        """The body as UTF-8 text; a body that is not UTF-8 is the caller's fault (400)."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the body is not UTF-8: {e}") from None

    def json(self) -> Any:
        """The body parsed as JSON; invalid JSON is the caller's fault (400)."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None

    def header(self, name: str) -> str | None:
        """A header's value (names match case-insensitively), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@dataclass(frozen=True)
class Tensor:
    """A named tensor: `dtype` is one of f32, f64, i32, i64, u8, bool, string; `data` is flat,
    in row-major order, with as many elements as the shape says."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: Sequence[Any]


def _tensor(dtype: str, name: str, shape: Iterable[int], data: Iterable[Any]) -> Tensor:
    shape = tuple(int(d) for d in shape)
    data = bytes(data) if dtype == "u8" else list(data)
    count = 1
    for d in shape:
        count *= d
    if count != len(data):
        raise ValueError(f"tensor {name!r}: shape {list(shape)} holds {count} elements, data has {len(data)}")
    return Tensor(name, shape, dtype, data)


def f32(name: str, shape: Iterable[int], data: Iterable[float]) -> Tensor:
    return _tensor("f32", name, shape, data)


def f64(name: str, shape: Iterable[int], data: Iterable[float]) -> Tensor:
    return _tensor("f64", name, shape, data)


def i32(name: str, shape: Iterable[int], data: Iterable[int]) -> Tensor:
    return _tensor("i32", name, shape, data)


def i64(name: str, shape: Iterable[int], data: Iterable[int]) -> Tensor:
    return _tensor("i64", name, shape, data)


def u8(name: str, shape: Iterable[int], data: Iterable[int]) -> Tensor:
    return _tensor("u8", name, shape, data)


def bool_(name: str, shape: Iterable[int], data: Iterable[bool]) -> Tensor:
    return _tensor("bool", name, shape, data)


def string(name: str, shape: Iterable[int], data: Iterable[str]) -> Tensor:
    return _tensor("string", name, shape, data)


class Outputs:
    """The model's outputs, by name."""

    def __init__(self, tensors: Sequence[Tensor]):
        self._by_name = {t.name: t for t in tensors}

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"the model has no output {name!r}; it has {sorted(self._by_name)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self._by_name.values())

    def f32(self, name: str) -> Sequence[float]:
        """Output `name`'s elements, which must be f32."""
        tensor = self[name]
        if tensor.dtype != "f32":
            raise TypeError(f"output {name!r} is {tensor.dtype}, not f32")
        return tensor.data


@dataclass(frozen=True)
class Response:
    """What the function answers itself (from postprocess)."""

    status: int
    content_type: str
    body: bytes


def json(value: Any, status: int = 200) -> Response:
    """A JSON answer."""
    return Response(status, "application/json", _json.dumps(value, separators=(",", ":")).encode())


def log(level: str, message: str) -> None:
    """Writes to the host's log, tagged with the function's name and version.
    `level` is trace, debug, info, warn or error."""
    from . import _world

    _world.log(level, message)
