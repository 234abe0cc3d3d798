"""Which bearer token a write request carries: the admin token, or a node's own.

The admin token is compared here, in constant time. A node token cannot be
checked here (the API keeps no state): its hash travels with the request and
the registry checks it against the node id of the body. Only a bearer that
could be a node token (the shape :func:`shared.auth.new_token` makes) goes
that far; anything else is a 401 before the body is read.
"""

from __future__ import annotations

import hmac
import re

from fastapi import Request

from services.api.errors import ADMIN_OFF_TEXT, UNAUTHORIZED_TEXT, ApiError
from shared.auth import token_hash
from shared.settings import ApiSettings

# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
NODE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def unauthorized() -> ApiError:
    return ApiError(401, UNAUTHORIZED_TEXT, headers={"WWW-Authenticate": "Bearer"})


def bearer(request: Request) -> str | None:
    """The bearer token of the request, None if it has none."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def is_admin(given: str | None, settings: ApiSettings) -> bool:
    token = settings.admin_token
    if token is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


def node_credential(request: Request, settings: ApiSettings) -> str | None:
    """None for the admin token, the hash of a would-be node token; else a 401."""
    given = bearer(request)
    if is_admin(given, settings):
        return None
    if given is not None and NODE_TOKEN.match(given):
        return token_hash(given)
    raise unauthorized()


def require_admin_token(request: Request, settings: ApiSettings) -> None:
    """The operator's routes: the admin token only (403 while none is configured)."""
    if settings.admin_token is None:
        raise ApiError(403, ADMIN_OFF_TEXT)
    if not is_admin(bearer(request), settings):
        raise unauthorized()
