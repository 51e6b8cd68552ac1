"""Faces of a video followed from frame to frame, and their answers smoothed.

A :class:`FaceTracker` holds one video's state (:class:`TrackingState`) and decides, per
frame, where the faces are before the network runs::

    faces = tracker.faces_to_crop(width, height)      # None: run the detector on this frame
    tracked = faces is not None
    if not tracked:
        faces = detect(image) or tracker.kept_faces()  # a detector miss does not end tracks
        tracked = faces is not None and faces[0].source == "tracked"
    recs = reconstruct(image, faces)
    if tracked and tracker.lost(recs):                 # a tracked crop lost its face:
        recs = reconstruct(image, detect(image))       # detect on this frame after all
        tracked = False
    recs = tracker.update(recs, intrinsics, t_s, detected, tracked)

Between detections each face is cropped on the five points the network predicted for it
on the previous frame (the detector runs every ``redetect_every`` frames, when there is
no face, or when a track is lost). A track is lost when its pose failed, its
reprojection residual is large for the face's size, or its points left the image; a
detector that finds no face on a scheduled frame does not end tracks that still hold.

With ``size_frames`` set, each answer is first put at the track's head size: one image
fixes a face only up to its size (a larger head further away projects the same), a
person's head does not change size, and each frame's reading of it is noisy. The size is
the RMS radius of the head-frame mesh about its centroid; the track keeps a running mean
of its logarithm (over all of its frames up to ``size_frames``, then exponential with that
horizon), and the frame's mesh and translation are scaled by the ratio, which leaves
their projection exactly as it was (``k V`` posed with ``k t`` is ``k`` times the camera
points). It moves the distance, not the face in the image.

Each track's pose and mesh go through One Euro filters (`jmlr.tracking.one_euro`, with or
without velocity prediction): rotation in the tangent space of the previous estimate,
translation in metres, head-frame vertices per vertex, and the expression weights of a
model with an expression head per weight. ``beta`` is in units of degrees per second
(rotation), centimetres per second (translation), millimetres per second (vertices) and
0.05 weight per second (expression: about a millimetre per second of a jaw opening), so
that one ``beta`` fits all four. Frames closer than `MIN_FILTER_DT_S` (1 ms) are
filtered as if they were that far apart: the filter's speed estimate divides by the time
step, and a step near zero (two timestamps a few ulps apart) would make it overflow; a
filter step that still comes out non-finite starts that track's filters again from this
frame.

The state is plain numbers and arrays (`TrackingState.to_record` / `from_record`), so a
service can keep it in any key-value store between frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from jmlr.facemodel.topology import Topology
from jmlr.geometry.camera import opencv_to_rt
from jmlr.geometry.crop import apply_affine, crop_transform, invert_affine, landmarks5_from_68
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.metrics import rms_radius
from jmlr.geometry.pnp import pose_result
from jmlr.inference.faces import Face, bbox_around_landmarks
from jmlr.inference.poses import FaceReconstruction

from .one_euro import OneEuroParams, one_euro_rotation, one_euro_vector

__all__ = [
    "TrackingParams",
    "Track",
    "TrackingState",
    "FaceTracker",
    "ROTATION_SPEED_SCALE",
    "TRANSLATION_SPEED_SCALE",
    "VERTEX_SPEED_SCALE",
    "EXPRESSION_SPEED_SCALE",
    "MIN_FILTER_DT_S",
    "FRAMING_SIZE",
    "running_log_size",
]

#: Speeds enter ``beta`` in degrees/s, cm/s and mm/s (the filters run in rad, m and m).
ROTATION_SPEED_SCALE = 180.0 / math.pi
TRANSLATION_SPEED_SCALE = 100.0
VERTEX_SPEED_SCALE = 1000.0
EXPRESSION_SPEED_SCALE = 20.0
#: The smallest time step the filters take, seconds (a 1000 fps stream's).
MIN_FILTER_DT_S = 1e-3


@dataclass(frozen=True)
class TrackingParams:
    """How faces are followed and smoothed.

    Attributes:
        redetect_every: run the detector at least every this many frames (1: every frame).
        max_residual: a track is lost when its reprojection RMS exceeds this fraction of
            the face's size (the side of the box around its five points).
        min_face_px: a track is lost when that box is smaller than this, in pixels.
        smoothing: One Euro settings for pose, mesh and expression (``predict`` for the
            variant that carries the estimate forward at its speed); None: no smoothing.
        framing: where a tracked frame's crop is aligned. ``"points"``: on the five points
            the network predicted on the previous frame. ``"detector"``: on the detector's
            five points of the last detection, carried along by the network's points (the
            detector's points in the frame of the network's at that detection, placed in
            the frame of the network's latest), so tracked crops are framed the way
            detected ones are.
        size_frames: the horizon, in frames, of the track's head size that each answer
            is scaled to (see the module docstring); 0 or 1: each frame's own size. Only
            with ``smoothing``.
    """

    redetect_every: int = 30
    max_residual: float = 0.1
    min_face_px: float = 16.0
    smoothing: OneEuroParams | None = field(default_factory=OneEuroParams)
    framing: Literal["points", "detector"] = "points"
    size_frames: int = 0

    def __post_init__(self) -> None:
        if self.size_frames < 0:
            raise ValueError(f"size_frames must be >= 0, got {self.size_frames}")


@dataclass
class Track:
    """One face followed over frames.

    Attributes:
        track_id: stable within a session.
        landmarks5: (5, 2) image px, where the next frame's crop is aligned.
        framing5: (5, 2) the last detection's five points in the aligned frame of the
            network's (`crop_transform` at `FRAMING_SIZE`); NaN when not known (framing
            ``"points"``, or a track that never had a detection).
        R_cv, t_cv: (3, 3), (3,) the filtered pose (world -> OpenCV camera, metres).
        omega: (3,) filtered angular velocity, rad/s; t_speed (3,) m/s.
        vertices: (N, 3) filtered head-frame vertices, metres; v_speed (N, 3) m/s.
        expression: (E,) filtered expression weights (empty: the model predicts none);
            e_speed (E,) per second.
        log_size: (1,) running mean of the log of the network's head size (RMS radius of
            its head-frame vertices, metres) over the track's frames; NaN: not known yet.
        frames: frames this track has answered.
    """

    track_id: int
    landmarks5: np.ndarray
    R_cv: np.ndarray
    t_cv: np.ndarray
    omega: np.ndarray
    t_speed: np.ndarray
    vertices: np.ndarray
    v_speed: np.ndarray
    frames: int = 1
    framing5: np.ndarray = field(default_factory=lambda: np.full((5, 2), np.nan))
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0))
    e_speed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_size: np.ndarray = field(default_factory=lambda: np.full(1, np.nan))

    _ARRAYS = ("landmarks5", "R_cv", "t_cv", "omega", "t_speed", "vertices", "v_speed", "framing5", "expression",
               "e_speed", "log_size")


@dataclass
class TrackingState:
    """Everything a video keeps between frames.

    Attributes:
        width, height: the frame size (None before the first frame).
        t_s: the last frame's time, seconds (None before the first frame).
        frames: frames seen; since_detection: frames since the detector last ran.
        tracks: the faces followed; next_id: the next track id.
    """

    width: int | None = None
    height: int | None = None
    t_s: float | None = None
    frames: int = 0
    since_detection: int = 0
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0

    def to_record(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able meta, named arrays): what a store keeps; `from_record` reverses it."""
        meta = {
            "width": self.width,
            "height": self.height,
            "t_s": self.t_s,
            "frames": self.frames,
            "since_detection": self.since_detection,
            "next_id": self.next_id,
            "tracks": [{"track_id": t.track_id, "frames": t.frames} for t in self.tracks],
        }
        arrays = {
            f"{k}.{name}": np.asarray(getattr(t, name), np.float64)
            for k, t in enumerate(self.tracks)
            for name in Track._ARRAYS
        }
        return meta, arrays

    @classmethod
    def from_record(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TrackingState:
        tracks = [
            Track(
                track_id=int(info["track_id"]),
                frames=int(info["frames"]),
                **{name: np.asarray(arrays[f"{k}.{name}"], np.float64) for name in Track._ARRAYS
                   if f"{k}.{name}" in arrays},  # states stored before a field existed get its default
            )
            for k, info in enumerate(meta["tracks"])
        ]
        return cls(
            width=meta["width"],
            height=meta["height"],
            t_s=meta["t_s"],
            frames=int(meta["frames"]),
            since_detection=int(meta["since_detection"]),
            tracks=tracks,
            next_id=int(meta["next_id"]),
        )


#: Side of the aligned frame in which `Track.framing5` is kept (any size works; it cancels).
FRAMING_SIZE = 256


def _face_size(landmarks5: np.ndarray) -> float:
    x0, y0, x1, y1 = bbox_around_landmarks(landmarks5)
    return float(min(x1 - x0, y1 - y0))


def running_log_size(previous: float, frames: int, radius_m: float, size_frames: int) -> float:
    """A track's mean log head size after one more reading: the mean over its readings up
    to ``size_frames`` of them, then exponential with that horizon (0 or 1: the reading).

    Args:
        previous: the mean so far (NaN: none yet); frames: the readings in it.
        radius_m: this frame's head size, the RMS radius of the mesh about its centroid.
    """
    own = math.log(radius_m)
    if frames < 1 or not math.isfinite(previous):
        return own
    return previous + (own - previous) / min(frames + 1, max(size_frames, 1))


def _track_log_size(rec: FaceReconstruction, old: Track | None, size_frames: int) -> np.ndarray:
    """(1,) the track's `running_log_size` with this frame's reading in it."""
    radius = float(rms_radius(rec.vertices))
    if not radius > 0:  # a degenerate mesh says nothing about the size
        return np.full(1, np.nan) if old is None else old.log_size.copy()
    previous, frames = (math.nan, 0) if old is None else (float(old.log_size[0]), old.frames)
    return np.array([running_log_size(previous, frames, radius, size_frames)])


def _at_size(rec: FaceReconstruction, size_m: float) -> FaceReconstruction:
    """``rec`` with its mesh and translation scaled so that the mesh's RMS radius is
    ``size_m``: about the camera centre, so its projection and residual are unchanged."""
    k = size_m / float(rms_radius(rec.vertices))
    t_cv = np.asarray(rec.pose.t_cv, np.float64) * k
    pose = replace(rec.pose, t_cv=t_cv, R_t=opencv_to_rt(rec.pose.R_cv, t_cv))
    return replace(rec, vertices=np.asarray(rec.vertices, np.float64) * k, pose=pose)


def _match(tracks: Sequence[Track], points: Sequence[np.ndarray], max_distance: float = 0.5) -> list[int | None]:
    """For each face's five points, the index of the track whose points are nearest (mean
    distance under ``max_distance`` of the track's face size), each track used once."""
    pairs = []
    for i, p in enumerate(points):
        for j, t in enumerate(tracks):
            d = float(np.linalg.norm(p - t.landmarks5, axis=1).mean()) / max(_face_size(t.landmarks5), 1e-6)
            if d < max_distance:
                pairs.append((d, i, j))
    out: list[int | None] = [None] * len(points)
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i], used = j, used | {j}
    return out


class FaceTracker:
    """One video's tracker; see the module docstring for the loop it runs in.

    Args:
        topology: the mesh topology (its ``landmarks68`` give the five points to crop on).
        params: tracking and smoothing settings.
        state: the state kept from the previous frame (default: a new video).
    """

    def __init__(
        self, topology: Topology, params: TrackingParams | None = None, state: TrackingState | None = None
    ) -> None:
        self.topology = topology
        self.params = params or TrackingParams()
        self.state = state or TrackingState()
        #: Why `faces_to_crop` started the video over on this frame (None: it did not).
        self.reset_reason: Literal["frame_size_changed"] | None = None
        #: After `update`: each returned face's track id (None: the face is not followed).
        self.track_ids: list[int | None] = []

    # ------------------------------------------------------------------ before the network
    def faces_to_crop(self, width: int, height: int) -> list[Face] | None:
        """The faces to crop on a ``width`` x ``height`` frame, from the tracks; None when
        the detector must run (first frame, no face, ``redetect_every`` reached, or a
        frame of another size, which starts the video over)."""
        s = self.state
        if s.width is not None and (s.width, s.height) != (width, height):
            self.reset_reason = "frame_size_changed"
            self.state = TrackingState(t_s=s.t_s, frames=s.frames, next_id=s.next_id)
            s = self.state
        s.width, s.height = width, height
        if not s.tracks or s.since_detection + 1 >= self.params.redetect_every:
            return None
        return self.kept_faces()

    def kept_faces(self) -> list[Face] | None:
        """The tracks' faces whatever the schedule (None: no track): for a frame where the
        detector ran and found nothing, so that its miss does not end tracks that hold."""
        if not self.state.tracks:
            return None
        return [
            Face(bbox_around_landmarks(t.landmarks5), t.landmarks5.copy(), None, "tracked") for t in self.state.tracks
        ]

    # ------------------------------------------------------------------ after the network
    def _landmarks5(self, rec: FaceReconstruction) -> np.ndarray:
        lm68 = np.asarray(self.topology.landmarks68)
        return landmarks5_from_68(np.asarray(rec.points)[lm68])

    def lost_reason(self, rec: FaceReconstruction) -> str | None:
        """Why this face's track cannot go on (None: it can)."""
        if not rec.finite or not rec.pose.success:
            return "pose_failed"
        lm5 = self._landmarks5(rec)
        size = _face_size(lm5)
        if size < self.params.min_face_px:
            return "face_too_small"
        w, h = self.state.width or 0, self.state.height or 0
        inside = (lm5[:, 0] >= 0) & (lm5[:, 0] < w) & (lm5[:, 1] >= 0) & (lm5[:, 1] < h)
        if inside.sum() < 3:
            return "left_frame"
        if rec.pose.rms_px > self.params.max_residual * size:
            return "residual"
        return None

    def lost(self, recs: Sequence[FaceReconstruction]) -> bool:
        """True when one of these faces is lost: if they were cropped from the tracks, the
        caller detects on this frame after all and gives `update` the detected faces."""
        return any(self.lost_reason(r) is not None for r in recs)

    def update(
        self,
        recs: Sequence[FaceReconstruction],
        intrinsics: Intrinsics,
        t_s: float,
        detected: bool,
        tracked: bool = False,
    ) -> list[FaceReconstruction]:
        """Advance the state to this frame (time ``t_s`` seconds, after the previous one)
        and return the faces with their pose and mesh smoothed (same order).

        ``tracked``: the faces are those of `faces_to_crop` / `kept_faces`, in order;
        otherwise (the detector's or the caller's) they are matched to the tracks by their
        five points (unmatched tracks end, unmatched faces start new ones). ``detected``:
        the detector ran on this frame (the ``redetect_every`` count starts again). A face
        whose track is lost is answered as it is and not followed.
        """
        s, p = self.state, self.params
        dt = None if s.t_s is None else t_s - s.t_s
        if dt is not None and not dt > 0:
            raise ValueError(f"frame time {t_s} is not after the previous frame's {s.t_s}")
        if tracked:
            previous: list[Track | None] = list(s.tracks)
        else:
            olds = _match(s.tracks, [self._landmarks5(r) for r in recs])
            previous = [None if j is None else s.tracks[j] for j in olds]
        s.since_detection = 0 if detected else s.since_detection + 1
        out: list[FaceReconstruction] = []
        tracks: list[Track] = []
        ids: list[int | None] = []
        for rec, old in zip(recs, previous):
            if self.lost_reason(rec) is not None:
                out.append(rec)
                ids.append(None)
                continue
            log_size = _track_log_size(rec, old, p.size_frames)
            if p.smoothing is not None and p.size_frames > 1 and np.isfinite(log_size).all():
                rec = _at_size(rec, float(np.exp(log_size[0])))
            track = None
            if old is not None and dt is not None and p.smoothing is not None:
                track = self._smoothed(rec, old, max(dt, MIN_FILTER_DT_S), p.smoothing)
            if track is None:
                track = self._new_track(rec, old)
            track.log_size = log_size
            tracks.append(track)
            ids.append(track.track_id)
            out.append(self._answer(rec, track, intrinsics) if p.smoothing is not None else rec)
        s.tracks, s.t_s = tracks, float(t_s)
        s.frames += 1
        self.track_ids = ids
        return out

    def _new_track(self, rec: FaceReconstruction, old: Track | None) -> Track:
        if old is None:
            track_id = self.state.next_id
            self.state.next_id += 1
        else:
            track_id = old.track_id
        V = np.asarray(rec.vertices, np.float64)
        E = np.zeros(0) if rec.expression is None else np.asarray(rec.expression, np.float64)
        crop5, framing5 = self._next_points(rec, old)
        return Track(
            track_id,
            crop5,
            np.asarray(rec.pose.R_cv, np.float64),
            np.asarray(rec.pose.t_cv, np.float64),
            np.zeros(3),
            np.zeros(3),
            V,
            np.zeros_like(V),
            frames=1 if old is None else old.frames + 1,
            framing5=framing5,
            expression=E,
            e_speed=np.zeros_like(E),
        )

    def _next_points(self, rec: FaceReconstruction, old: Track | None) -> tuple[np.ndarray, np.ndarray]:
        """Where the next frame's crop of this face is aligned, and the track's `framing5`."""
        net5 = self._landmarks5(rec)
        if self.params.framing != "detector":
            return net5, np.full((5, 2), np.nan)
        to_frame = crop_transform(net5, FRAMING_SIZE)
        if rec.face.source != "tracked":  # this crop was framed by the detector's (or the caller's) points
            framing5 = apply_affine(to_frame, np.asarray(rec.face.landmarks5, np.float64))
        else:
            framing5 = np.full((5, 2), np.nan) if old is None else old.framing5
        if not np.isfinite(framing5).all():
            return net5, framing5
        return apply_affine(invert_affine(to_frame), framing5), framing5

    def _smoothed(self, rec: FaceReconstruction, old: Track, dt: float, params: OneEuroParams) -> Track | None:
        """The track advanced by one filter step; None when a value came out non-finite
        (then the caller starts the filters again: a kept NaN would end every later answer)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            R, omega = one_euro_rotation(rec.pose.R_cv, old.R_cv, old.omega, dt, params, ROTATION_SPEED_SCALE)
            t, t_speed = one_euro_vector(rec.pose.t_cv, old.t_cv, old.t_speed, dt, params, TRANSLATION_SPEED_SCALE)
            V, v_speed = one_euro_vector(rec.vertices, old.vertices, old.v_speed, dt, params, VERTEX_SPEED_SCALE)
            E, e_speed = np.zeros(0), np.zeros(0)
            if rec.expression is not None:
                E = np.asarray(rec.expression, np.float64)
                e_speed = np.zeros_like(E)
                if old.expression.shape == E.shape:  # else (another model) its filter starts here
                    E, e_speed = one_euro_vector(E, old.expression, old.e_speed, dt, params, EXPRESSION_SPEED_SCALE)
        if not all(np.isfinite(x).all() for x in (R, omega, t, t_speed, V, v_speed, E, e_speed)):
            return None
        crop5, framing5 = self._next_points(rec, old)
        return Track(old.track_id, crop5, R, t, omega, t_speed, V, v_speed, old.frames + 1, framing5, E, e_speed)

    @staticmethod
    def _answer(rec: FaceReconstruction, track: Track, intrinsics: Intrinsics) -> FaceReconstruction:
        # The smoothed mesh posed by the smoothed pose; its residual is measured against
        # this frame's network points, so it still says how well the answer fits the image.
        pose = pose_result(track.vertices, rec.points, track.R_cv, track.t_cv, intrinsics)
        expression = None if rec.expression is None else track.expression.copy()
        return replace(rec, vertices=track.vertices.copy(), pose=pose, expression=expression)
