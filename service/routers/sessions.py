"""``/sessions/{id}``: a video session's state, and ending it.

Sessions are made by ``POST /reconstruct`` with a ``session_id``; they live in the
namespace of the API key that made them, so another key's session answers 404 exactly
like an unknown or expired one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from service.deps import ApiKeyRequired
from service.errors import ApiError, ErrorResponse
from service.schemas_sessions import SESSION_ID_PATTERN, SessionInfo
from service.sessions import ScopeDep, SessionsDep

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN, examples=["5f0c2a9e-cam0"])]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No X-API-Key while keys are configured (`missing_api_key`)."},
    403: {"model": ErrorResponse, "description": "The X-API-Key is not valid (`invalid_api_key`)."},
    404: {
        "model": ErrorResponse,
        "description": "No live session with this id for this API key (`session_not_found`): unknown, expired, "
        "deleted, or another key's.",
    },
    503: {"model": ErrorResponse, "description": "Session storage unreachable (`storage_unavailable`)."},
}


def _not_found(session_id: str) -> ApiError:
    return ApiError(404, "session_not_found", f"no session {session_id!r} (unknown, expired or deleted)")


@router.get(
    "/{session_id}",
    response_model=SessionInfo,
    summary="A video session's state",
    dependencies=[ApiKeyRequired],
    responses=_RESPONSES,
)
async def get_session(session_id: SessionIdPath, sessions: SessionsDep, scope: ScopeDep) -> SessionInfo:
    info = await sessions.info(scope, session_id)
    if info is None:
        raise _not_found(session_id)
    return info


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End a video session",
    dependencies=[ApiKeyRequired],
    responses=_RESPONSES,
)
async def delete_session(session_id: SessionIdPath, sessions: SessionsDep, scope: ScopeDep) -> Response:
    if not await sessions.delete(scope, session_id):
        raise _not_found(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
