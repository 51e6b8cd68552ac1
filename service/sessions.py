"""Video and AR sessions: ``session_id`` on ``POST /reconstruct``.

A client streaming frames names its stream with a ``session_id`` of its choice (and
optionally each frame's ``timestamp`` in seconds). Per session the service keeps a
`jmlr.tracking.TrackingState` in a `SessionStore` (the mesh storage, or memory), with a
TTL renewed by every frame. Each frame runs under the session's lock and ends with a
compare-and-set of its state, so frames of one session are answered one at a time, in
their order, and a write that lost a race with another replica is refused (409), never
merged. Sessions live in the namespace of the API key that made them: another key's
session id is simply not found.

Decisions (docs/sessions.md): an unknown or expired id starts a new session
(``session.status: "started"``); a timestamp not after the previous frame's is a 409
``session_timestamp_out_of_order`` (the frame is not used); a frame of another size
restarts the session's tracks (``status: "restarted"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from jmlr.facemodel.topology import Topology
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.inference import Face, FaceReconstruction
from jmlr.tracking import FaceTracker, OneEuroParams, TrackingParams, TrackingState

from .deps import api_key_header
from .errors import ApiError
from .schemas import FaceOut, ReconstructResponse
from .schemas_sessions import SessionInfo, SessionOut, SmoothingIn
from .sessions_store import MemorySessionStore, SessionStore, StorageSessionStore
from .settings import Settings


def key_scope(api_keys: list[str], api_key: str | None) -> str:
    """The namespace of a request's sessions: a hash of its API key (never the key
    itself), or ``open`` when the service has no keys (then it serves loopback only)."""
    if not api_keys or not api_key:
        return "open"
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


async def get_scope(request: Request, api_key: Annotated[str | None, Depends(api_key_header)] = None) -> str:
    return key_scope(request.app.state.settings.api_keys, api_key)


ScopeDep = Annotated[str, Depends(get_scope)]


class SessionFrame:
    """One frame of a session, as the pipeline sees it (`service.pipeline.Engine.reconstruct`)."""

    def __init__(self, tracker: FaceTracker, t_s: float) -> None:
        self.tracker = tracker
        self.t_s = t_s
        # Set by the pipeline: the detector ran; the faces were cropped from the tracks.
        self.detected = False
        self.tracked = False
        self._ids: dict[int, int | None] = {}

    def faces_to_crop(self, width: int, height: int) -> list[Face] | None:
        return self.tracker.faces_to_crop(width, height)

    def kept_faces(self) -> list[Face] | None:
        return self.tracker.kept_faces()

    def lost(self, recs: list[FaceReconstruction]) -> bool:
        return self.tracker.lost(recs)

    def update(self, recs: list[FaceReconstruction], intrinsics: Intrinsics) -> list[FaceReconstruction]:
        out = self.tracker.update(recs, intrinsics, self.t_s, self.detected, self.tracked)
        self._ids = {id(rec): track_id for rec, track_id in zip(out, self.tracker.track_ids)}
        return out

    def annotate(self, faces: list[FaceOut], recs: list[FaceReconstruction]) -> None:
        """Give each answered face the id of its track (None: not followed)."""
        for face, rec in zip(faces, recs):
            face.track_id = self._ids.get(id(rec))


class _Locks:
    """One asyncio lock per session key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True)
class SessionRequest:
    """The session fields of one ``POST /reconstruct``."""

    session_id: str
    timestamp_s: float | None = None
    smoothing: SmoothingIn | None = None


class Sessions:
    """The service's sessions: their store, their locks and the settings they run with."""

    def __init__(self, settings: Settings, store: SessionStore) -> None:
        self.settings = settings
        self.store = store
        self._locks = _Locks()

    @classmethod
    def create(cls, settings: Settings, storage) -> Sessions:
        if settings.session_storage == "memory":
            return cls(settings, MemorySessionStore(settings.session_max_memory))
        return cls(settings, StorageSessionStore(storage))

    def params(self, smoothing: SmoothingIn | None) -> TrackingParams:
        """The tracking settings of one frame: the service's, with the frame's ``smoothing`` on top."""
        s = self.settings
        filt: OneEuroParams | None = OneEuroParams(
            s.session_min_cutoff, s.session_beta, s.session_d_cutoff, s.session_predict
        )
        size_frames = s.session_size_frames
        if smoothing is not None:
            if not smoothing.enabled:
                filt = None
            else:
                given = smoothing.model_dump(exclude={"enabled", "size_frames"}, exclude_none=True)
                filt = OneEuroParams(**{**vars(filt), **given})
                size_frames = size_frames if smoothing.size_frames is None else smoothing.size_frames
        return TrackingParams(
            redetect_every=s.session_redetect_every, max_residual=s.session_max_residual, smoothing=filt,
            framing=s.session_framing, size_frames=size_frames,
        )

    async def run_frame(
        self,
        scope: str,
        req: SessionRequest,
        topology: Topology,
        reconstruct: Callable[[SessionFrame], Awaitable[ReconstructResponse]],
    ) -> ReconstructResponse:
        """Answer one frame of session ``req.session_id`` with ``reconstruct(frame)`` and
        keep the session's new state; the response gets its ``session`` part."""
        key = f"{scope}:{req.session_id}"
        ttl = self.settings.session_ttl_s
        async with self._locks.hold(key):
            found = await asyncio.to_thread(self.store.get, key)
            state, version = (
                (None, None) if found is None else (TrackingState.from_record(found[0], found[1]), found[2])
            )
            last = state.t_s if state is not None else None
            if req.timestamp_s is not None:
                t_s = float(req.timestamp_s)
                if last is not None and not t_s > last:
                    raise ApiError(
                        409,
                        "session_timestamp_out_of_order",
                        f"timestamp {t_s:.6f} s is not after the session's last frame ({last:.6f} s); "
                        "the frame was not used (send frames in order, timestamps in seconds)",
                    )
            else:
                t_s = 0.0 if last is None else last + 1.0 / self.settings.session_fps
            params = self.params(req.smoothing)
            frame = SessionFrame(FaceTracker(topology, params, state), t_s)
            response = await reconstruct(frame)
            new_state = frame.tracker.state
            meta, arrays = new_state.to_record()
            meta["expires_at"] = time.time() + ttl
            written = await asyncio.to_thread(self.store.put, key, meta, arrays, ttl, version)
            if written is None:
                raise ApiError(
                    409,
                    "session_conflict",
                    f"session {req.session_id!r} was changed or deleted by another request while this "
                    "frame was answered; the frame was not used",
                )
        response.session = SessionOut(
            id=req.session_id,
            status="started" if state is None else ("restarted" if frame.tracker.reset_reason else "continued"),
            reset_reason=frame.tracker.reset_reason,
            frame=new_state.frames - 1,
            timestamp_s=t_s,
            detected=frame.detected,
            tracks=len(new_state.tracks),
            smoothed=params.smoothing is not None,
            expires_in_s=ttl,
        )
        return response

    async def info(self, scope: str, session_id: str) -> SessionInfo | None:
        found = await asyncio.to_thread(self.store.get, f"{scope}:{session_id}")
        if found is None:
            return None
        meta, arrays, _ = found
        state = TrackingState.from_record(meta, arrays)
        expires = meta.get("expires_at")
        return SessionInfo(
            id=session_id,
            frames=state.frames,
            width=state.width,
            height=state.height,
            last_timestamp_s=state.t_s,
            tracks=[t.track_id for t in state.tracks],
            frames_since_detection=state.since_detection,
            expires_at=float(expires) if expires is not None and math.isfinite(expires) else 0.0,
        )

    async def delete(self, scope: str, session_id: str) -> bool:
        key = f"{scope}:{session_id}"
        async with self._locks.hold(key):  # after a frame in progress, never under it
            return await asyncio.to_thread(self.store.delete, key)


async def get_sessions(request: Request) -> Sessions:
    sessions = getattr(request.app.state, "sessions", None)
    if sessions is None:  # the lifespan makes it; a request before that is not served
        raise ApiError(503, "model_not_ready", "the service is starting", {"Retry-After": "2"})
    return sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
