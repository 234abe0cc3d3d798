"""Reading request bodies: raw JSON, capped in size."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from services.api.errors import TOO_LARGE_TEXT, ApiError


class NotJson(Exception):
    """The body is not UTF-8 JSON."""


async def read_json(request: Request, limit: int) -> Any:
    """Parse the raw body as JSON whatever the Content-Type; 413 past ``limit`` bytes.

    The original gateway's Python client posts ``data=json.dumps(...)``
    without a JSON content type, so the header is not consulted.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, TOO_LARGE_TEXT)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, TOO_LARGE_TEXT)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotJson from None
