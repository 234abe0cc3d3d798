"""The operator's routes: enroll, revoke and list nodes (admin token only).

Each is one request to the registry worker, which owns the node store and
makes the broker users (docs/security.md). A node's credentials are in the
answer to its enrollment and nowhere else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.api import openapi as doc
from services.api.bodies import BridgeUser, Enrolling, Revoking, body
from services.api.credentials import require_admin_token
from services.api.errors import JsonResponse
from services.api.routes import GatewayDep, get_settings
from shared.contracts import (
    BRIDGE_USER,
    ENROLL,
    LIST_ENROLLED,
    REVOKE,
    BridgeUserRequest,
    Done,
    Enrolled,
    EnrolledList,
    EnrollRequest,
    ListRequest,
    RevokeRequest,
)


async def require_operator(request: Request) -> None:
    require_admin_token(request, get_settings(request))


admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_operator)])


def _credentials(enrolled: Enrolled) -> JsonResponse:
    return JsonResponse({"node-id": enrolled.node_id, "amqp-url": enrolled.amqp_url,
                         "token": enrolled.token, "node-address": enrolled.node_address})


@admin.post("/enroll", summary="Enroll a node, or rotate its credentials.",
            openapi_extra=doc.ENROLL_BODY, responses=doc.ENROLL_RESPONSES)
async def enroll(gateway: GatewayDep,
                 fields: Annotated[Enrolling, body(Enrolling)]) -> JsonResponse:
    command = EnrollRequest(node_id=fields.node_id, node_address=fields.node_address,
                            bridged=fields.bridged)
    return _credentials(await gateway.registry(ENROLL, command, Enrolled))


@admin.post("/revoke", summary="Revoke a node: its broker user, its token, its registration.",
            openapi_extra=doc.REVOKE_BODY, responses=doc.REVOKE_RESPONSES)
async def revoke(gateway: GatewayDep,
                 fields: Annotated[Revoking, body(Revoking)]) -> JsonResponse:
    await gateway.registry(REVOKE, RevokeRequest(node_id=fields.node_id), Done)
    gateway.membership.left_here(fields.node_id)  # gone from this process's lists at once
    return JsonResponse({"message": "Revoked."})


@admin.get("/nodes", summary="Enrolled nodes: when each enrolled and was last heard.",
           responses=doc.ENROLLED_RESPONSES)
async def enrolled_nodes(gateway: GatewayDep) -> JsonResponse:
    listed = await gateway.registry(LIST_ENROLLED, ListRequest(), EnrolledList)
    return JsonResponse(listed.model_dump(mode="json"))


@admin.post("/bridge-user", summary="Create or rotate an HTTP bridge's broker user.",
            openapi_extra=doc.BRIDGE_USER_BODY, responses=doc.BRIDGE_USER_RESPONSES)
async def bridge_user(gateway: GatewayDep,
                      fields: Annotated[BridgeUser, body(BridgeUser)]) -> JsonResponse:
    command = BridgeUserRequest(user=fields.user)
    return _credentials(await gateway.registry(BRIDGE_USER, command, Enrolled))
