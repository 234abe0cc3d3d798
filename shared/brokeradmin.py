"""Broker users through RabbitMQ's management HTTP API (``GRID_BROKER_ADMIN_URL``).

Over HTTP, so that enroll and revoke work from any host and on a cluster (a
user and its permissions are cluster-wide). Every call has a deadline; any
failure is a :class:`~shared.errors.BrokerAdminUnavailable` with the reason.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from shared.errors import BrokerAdminUnavailable

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


def _segment(name: str) -> str:
    """A path segment of the API: vhost "/" is "%2F", and so on."""
    return quote(name, safe="")


class BrokerAdmin:
    """Creates, rotates and deletes broker users, and closes their connections."""

    def __init__(self, admin_url: str, vhost: str = "/") -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("GRID_BROKER_ADMIN_URL must be http(s)://user:password@host:port")
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api", "", ""))
        self.vhost = vhost
        self._http = httpx.AsyncClient(base_url=base, auth=auth, timeout=TIMEOUT_S)

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: object = None,
                    missing_ok: bool = False) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BrokerAdminUnavailable(
                f"broker management API unreachable: {type(exc).__name__}") from None
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code >= 300:
            raise BrokerAdminUnavailable(
                f"broker management API refused {method} {path.split('/')[1]}: "
                f"{response.status_code} {response.text[:200]}")
        return response

    async def user_tags(self, user: str) -> list[str] | None:
        """The user's management tags (``administrator``...), None if there is no such user."""
        response = await self._call("GET", f"/users/{_segment(user)}", missing_ok=True)
        if response.status_code == 404:
            return None
        tags = response.json().get("tags", [])
        return tags.split(",") if isinstance(tags, str) else list(tags)

    async def put_user(self, user: str, password: str) -> None:
        """Create the user, or set a new password (rotation); no management tags."""
        await self._call("PUT", f"/users/{_segment(user)}", {"password": password, "tags": ""})

    async def set_permissions(self, user: str, configure: str, write: str, read: str) -> None:
        await self._call("PUT", f"/permissions/{_segment(self.vhost)}/{_segment(user)}",
                         {"configure": configure, "write": write, "read": read})

    async def set_topic_permissions(self, user: str, exchange: str, write: str,
                                    read: str) -> None:
        await self._call("PUT", f"/topic-permissions/{_segment(self.vhost)}/{_segment(user)}",
                         {"exchange": exchange, "write": write, "read": read})

    async def delete_user(self, user: str) -> None:
        """Delete the user (a missing one is fine)."""
        await self._call("DELETE", f"/users/{_segment(user)}", missing_ok=True)

    async def close_connections(self, user: str) -> int:
        """Close every open connection of ``user``; how many there were."""
        response = await self._call("GET", "/connections?columns=name,user")
        names = [row["name"] for row in response.json() if row.get("user") == user]
        for name in names:
            await self._call("DELETE", f"/connections/{_segment(name)}", missing_ok=True)
        log.info("closed a broker user's connections", extra={"user": user, "count": len(names)})
        return len(names)
