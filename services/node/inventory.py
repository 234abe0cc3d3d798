"""What a node holds, and how it answers each query about it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.contracts import EncryptedModelHosts, NodeQuery, NodeReply


class Tensor(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    tags: list[str] = []


class Inventory(BaseModel):
    """A node's models, encrypted models and tagged tensors (every key optional).

    This is the demo node's file format; a real node can answer from anywhere
    by giving :class:`~services.node.sdk.GridNode` its own handler.
    """

    models: list[str] = []
    encrypted_models: dict[str, EncryptedModelHosts] = {}
    tensors: list[Tensor] = []

    @classmethod
    def from_file(cls, path: str | Path) -> Inventory:
        return cls.model_validate_json(Path(path).read_bytes())

    def version(self) -> str:
        """A digest of the whole inventory: it changes whenever any answer may change."""
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=8).hexdigest()

    def tags(self) -> list[str]:
        return sorted({tag for tensor in self.tensors for tag in tensor.tags})

    def holds_all(self, tags: list[str]) -> bool:
        """True when one tensor carries every tag (tags are ANDed)."""
        wanted = set(tags)
        return any(wanted <= set(tensor.tags) for tensor in self.tensors)

    def answer(self, node_id: str, query: NodeQuery, version: str | None = None) -> NodeReply:
        """The node's reply to ``query``, naming ``version`` (the inventory's, if given)."""
        return NodeReply(node_id=node_id, version=version, **self._answer_fields(query))

    def _answer_fields(self, query: NodeQuery) -> dict:
        if query.op == "list_models":
            return {"models": self.models}
        if query.op == "list_tags":
            return {"tags": self.tags()}
        if query.op == "has_model":
            return {"match": query.model_id in self.models}
        if query.op == "search_tags":
            return {"match": self.holds_all(query.tags or [])}
        return {"encrypted": self.encrypted_models.get(query.model_id or "")}
