"""``GridClient`` (sync) and ``AsyncGridClient`` (async): the gateway's HTTP API in Python.

Both take the gateway's URL (else ``GRID_GATEWAY_URL``), its admin token (else
``GRID_ADMIN_TOKEN``; sent as a bearer token on every call) and a timeout per
call (else ``GRID_CLIENT_TIMEOUT_S``, 10 s). What each call sends and how its
answer is read lives in :mod:`services.client.calls`; the two classes only send.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from services.client import calls
from services.client.calls import Call
from services.client.models import (
    EncryptedModel,
    EncryptedPlacement,
    Names,
    NodeAddress,
    NodeCredentials,
    NodeMatches,
)
from services.client.settings import ClientSettings

T = TypeVar("T")


def http_options(url: str | None, token: str | None, timeout: float | None,
                 settings: ClientSettings | None) -> dict[str, Any]:
    """httpx client arguments: each given value, else the environment's."""
    settings = settings or ClientSettings.from_env()
    secret = settings.admin_token.get_secret_value() if settings.admin_token else None
    token = token or secret
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": (url or settings.gateway_url).rstrip("/"), "headers": headers,
            "timeout": timeout if timeout is not None else settings.client_timeout_s}


class GridClient:
    """The gateway's API, synchronous. Use it as a context manager, or call ``close``."""

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 timeout: float | None = None, settings: ClientSettings | None = None) -> None:
        self._http = httpx.Client(**http_options(url, token, timeout, settings))

    def __enter__(self) -> GridClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        with calls.transport_errors(call, self._http.base_url):
            response = self._http.request(call.method, call.path, json=call.body)
        return calls.answer(call, response)

    def search(self, *tags: str) -> NodeMatches:
        """Nodes holding one tensor that carries every tag."""
        return self._run(calls.search(tags))

    def search_model(self, model_id: str) -> NodeMatches:
        return self._run(calls.search_model(model_id))

    def search_encrypted_model(self, model_id: str) -> EncryptedModel:
        return self._run(calls.search_encrypted_model(model_id))

    def available_models(self) -> Names:
        return self._run(calls.available_models())

    def available_tags(self) -> Names:
        return self._run(calls.available_tags())

    def connected_nodes(self) -> tuple[str, ...]:
        return self._run(calls.connected_nodes())

    def choose_model_host(self) -> tuple[NodeAddress, ...]:
        return self._run(calls.choose_model_host())

    def choose_encrypted_model_host(self) -> tuple[EncryptedPlacement, ...]:
        """One placement per replica; empty when the gateway has too few live nodes."""
        return self._run(calls.choose_encrypted_model_host())

    def join(self, node_id: str, address: str) -> str:
        """Register a node; the gateway's message. Raises Conflict if the id is taken."""
        return self._run(calls.join(node_id, address))

    def delete(self, node_id: str, address: str) -> str:
        """Remove a node; raises NotFound unless id and address both match."""
        return self._run(calls.delete(node_id, address))

    def enroll(self, node_id: str, address: str | None = None,
               bridged: bool = False) -> NodeCredentials:
        """Enroll a node (or rotate its credentials); needs the admin token."""
        return self._run(calls.enroll(node_id, address, bridged))

    def revoke(self, node_id: str) -> str:
        """Revoke a node's credentials and remove it; needs the admin token."""
        return self._run(calls.revoke(node_id))


class AsyncGridClient:
    """The gateway's API, asynchronous: the methods of :class:`GridClient`, awaited."""

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 timeout: float | None = None, settings: ClientSettings | None = None) -> None:
        self._http = httpx.AsyncClient(**http_options(url, token, timeout, settings))

    async def __aenter__(self) -> AsyncGridClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        with calls.transport_errors(call, self._http.base_url):
            response = await self._http.request(call.method, call.path, json=call.body)
        return calls.answer(call, response)

    async def search(self, *tags: str) -> NodeMatches:
        return await self._run(calls.search(tags))

    async def search_model(self, model_id: str) -> NodeMatches:
        return await self._run(calls.search_model(model_id))

    async def search_encrypted_model(self, model_id: str) -> EncryptedModel:
        return await self._run(calls.search_encrypted_model(model_id))

    async def available_models(self) -> Names:
        return await self._run(calls.available_models())

    async def available_tags(self) -> Names:
        return await self._run(calls.available_tags())

    async def connected_nodes(self) -> tuple[str, ...]:
        return await self._run(calls.connected_nodes())

    async def choose_model_host(self) -> tuple[NodeAddress, ...]:
        return await self._run(calls.choose_model_host())

    async def choose_encrypted_model_host(self) -> tuple[EncryptedPlacement, ...]:
        return await self._run(calls.choose_encrypted_model_host())

    async def join(self, node_id: str, address: str) -> str:
        return await self._run(calls.join(node_id, address))

    async def enroll(self, node_id: str, address: str | None = None,
                     bridged: bool = False) -> NodeCredentials:
        """Enroll a node (or rotate its credentials); needs the admin token."""
        return await self._run(calls.enroll(node_id, address, bridged))

    async def revoke(self, node_id: str) -> str:
        """Revoke a node's credentials and remove it; needs the admin token."""
        return await self._run(calls.revoke(node_id))

    async def delete(self, node_id: str, address: str) -> str:
        return await self._run(calls.delete(node_id, address))
