"""The glue between a user's module and the bindings componentize-py generates from spec/wit.
`build.sh` writes an entry module that calls `world_of(user_module)`; users never import this."""

from __future__ import annotations

import traceback
from types import ModuleType

import aifn
import wit_world
from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types as wit

_LEVELS = {
    "trace": _log.Level.TRACE,
    "debug": _log.Level.DEBUG,
    "info": _log.Level.INFO,
    "warn": _log.Level.WARN,
    "error": _log.Level.ERROR,
}

_TO_WIT = {
    "f32": wit.TensorData_F32,
    "f64": wit.TensorData_F64,
    "i32": wit.TensorData_I32,
    "i64": wit.TensorData_I64,
    "u8": wit.TensorData_U8,
    "bool": wit.TensorData_Bool,
    "string": wit.TensorData_String,
}
_FROM_WIT = {cls: dtype for dtype, cls in _TO_WIT.items()}


def log(level: str, message: str) -> None:
    if level not in _LEVELS:
        raise ValueError(f"log level {level!r} is not one of {sorted(_LEVELS)}")
    _log.log(_LEVELS[level], message)


def _request(req: wit.Request) -> aifn.Request:
    return aifn.Request(req.route, req.method, req.headers, req.body)


def _to_wit(tensor: aifn.Tensor) -> wit.Tensor:
    if not isinstance(tensor, aifn.Tensor):
        raise TypeError(f"preprocess must return aifn tensors (aifn.f32(...) etc.), not {type(tensor).__name__}")
    return wit.Tensor(tensor.name, list(tensor.shape), _TO_WIT[tensor.dtype](tensor.data))


def _from_wit(tensor: wit.Tensor) -> aifn.Tensor:
    return aifn.Tensor(tensor.name, tuple(tensor.shape), _FROM_WIT[type(tensor.data)], tensor.data.value)


def _error(e: BaseException) -> Err:
    if isinstance(e, aifn.BadRequest):
        return Err(wit.Error(wit.ErrorKind.BAD_REQUEST, str(e)))
    # The function's own failure: name the exception and where it happened.
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" at {where.filename}:{where.lineno}" if where else ""
    return Err(wit.Error(wit.ErrorKind.INTERNAL, f"{type(e).__name__}: {e}{at}"))


def world_of(module: ModuleType) -> type:
    """The class componentize-py exports, calling the user's `preprocess` and `postprocess`."""
    preprocess = getattr(module, "preprocess", None)
    if not callable(preprocess):
        raise TypeError(f"{module.__name__} must define preprocess(req)")
    postprocess = getattr(module, "postprocess", None)

    class WitWorld(wit_world.WitWorld):
        def preprocess(self, req: wit.Request) -> list[wit.Tensor]:
            try:
                return [_to_wit(t) for t in preprocess(_request(req))]
            except Exception as e:
                raise _error(e) from None

        def postprocess(self, req: wit.Request, outputs: list[wit.Tensor]) -> wit.Response | None:
            if postprocess is None:
                return None
            try:
                answer = postprocess(_request(req), aifn.Outputs([_from_wit(t) for t in outputs]))
            except Exception as e:
                raise _error(e) from None
            if answer is None:
                return None
            if not isinstance(answer, aifn.Response):
                raise _error(TypeError(f"postprocess must return aifn.Response or None, not {type(answer).__name__}"))
            if not isinstance(answer.status, int) or not 100 <= answer.status <= 599:
                raise _error(ValueError(f"the response status must be an HTTP status, not {answer.status!r}"))
            body = answer.body.encode() if isinstance(answer.body, str) else answer.body
            if not isinstance(body, (bytes, bytearray)):
                raise _error(TypeError(f"the response body must be bytes or str, not {type(body).__name__}"))
            return wit.Response(answer.status, str(answer.content_type), bytes(body))

    return WitWorld
