"""JSON on the wire, with orjson, everywhere."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequest

CONTENT_TYPE = "application/json"
M = TypeVar("M", bound=BaseModel)


def dumps(value: Any) -> bytes:
    """Encode plain data or pydantic models (orjson serialises them via model_dump)."""
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def decode(model: type[M], raw: bytes) -> M:
    """Parse and validate a message body, raising InvalidRequest on any defect."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequest(f"{model.__name__}: {exc.error_count()} invalid field(s)") from None
    except ValueError:
        raise InvalidRequest(f"{model.__name__}: body is not JSON") from None


def validate(model: type[M], data: Any) -> M:
    """Validate already-parsed data against a contract."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"{model.__name__}: {exc.error_count()} invalid field(s)") from None
