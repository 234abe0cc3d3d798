"""The client's settings, read from ``GRID_*`` variables with pydantic alone.

The client speaks only HTTP: it needs neither the broker's packages nor
pydantic-settings, so it reads its three variables itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, SecretStr

PREFIX = "GRID_"


class ClientSettings(BaseModel):
    """The Python client of the HTTP API (``services.client``): no broker involved."""

    gateway_url: str = "http://127.0.0.1:8000"
    # Sent as "Authorization: Bearer <token>" on every request when set.
    admin_token: SecretStr | None = None
    client_timeout_s: float = Field(default=10.0, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """The settings named ``GRID_<FIELD>``; an empty or blank variable counts as unset."""
        environ = os.environ if environ is None else environ
        values = {name: environ[PREFIX + name.upper()] for name in cls.model_fields
                  if environ.get(PREFIX + name.upper(), "").strip()}
        return cls(**values)
