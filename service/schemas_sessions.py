"""The video-session parts of ``POST /reconstruct`` and the ``/sessions`` routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Session ids are the client's: a UUID, a stream name. They end up in storage keys.
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

Cutoff = Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False, strict=False)]


class SmoothingIn(BaseModel):
    """Smoothing settings for this frame (omitted: the service's, see
    ``JMLR_SESSION_MIN_CUTOFF``, ``JMLR_SESSION_BETA``, ``JMLR_SESSION_D_CUTOFF``,
    ``JMLR_SESSION_PREDICT``, ``JMLR_SESSION_SIZE_FRAMES``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"min_cutoff": 1.0, "beta": 0.15}, {"predict": False}, {"enabled": False}]},
    )

    enabled: bool = Field(True, description="false: this frame's answer is not smoothed (tracking still runs)")
    min_cutoff: Cutoff | None = Field(None, description="cutoff at rest, Hz (lower: smoother, more lag)")
    beta: Cutoff | None = Field(
        None,
        description="cutoff increase per unit of speed, Hz per (deg/s | cm/s | mm/s) for rotation, "
        "translation and vertices (higher: less lag in fast motion)",
    )
    d_cutoff: Cutoff | None = Field(None, description="cutoff of the speed estimate, Hz")
    predict: bool | None = Field(
        None, description="carry the previous estimate forward at its speed before blending (false: the classic "
        "One Euro filter, which trails a moving head)",
    )
    size_frames: int | None = Field(
        None, ge=0, le=100000,
        description="frames over which a face's head size is averaged (its mesh and distance scaled to it); "
        "0: each frame's own size",
    )


SessionStatus = Literal["started", "continued", "restarted"]


class SessionOut(BaseModel):
    """Where this frame stands in its session (only when ``session_id`` was given)."""

    id: str
    status: SessionStatus = Field(
        description="'started': no live session had this id (a new one, or one that expired or was deleted: "
        "it starts over), 'continued', or 'restarted': the session went on but its faces were dropped "
        "(see reset_reason)"
    )
    reset_reason: Literal["frame_size_changed"] | None = None
    frame: int = Field(description="index of this frame in the session, from 0")
    timestamp_s: float = Field(description="this frame's time, seconds (given, or the last one + 1/JMLR_SESSION_FPS)")
    detected: bool = Field(
        description="the face detector ran on this frame (otherwise faces came from the tracks "
        "or from the request's `faces`)"
    )
    tracks: int = Field(description="faces followed into the next frame")
    smoothed: bool = Field(description="the pose, mesh and blendshapes of this frame are smoothed")
    expires_in_s: float = Field(description="the session expires this long after this frame unless another comes")


class SessionInfo(BaseModel):
    """A live session's state, as ``GET /sessions/{id}`` reports it."""

    id: str
    frames: int
    width: int | None
    height: int | None
    last_timestamp_s: float | None
    tracks: list[int] = Field(description="ids of the faces followed")
    frames_since_detection: int
    expires_at: float = Field(description="Unix seconds")
