"""``POST /reconstruct``: one photo in, metric pose + mesh per face out."""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, get_type_hints

from fastapi import APIRouter, File, Form, Request, UploadFile, params
from pydantic import BaseModel, ValidationError

from ..bounded_json import JsonLimitError, loads_bounded
from ..deps import ApiKeyRequired, EngineDep, OptionalStorageDep, SettingsDep
from ..errors import ApiError, ErrorResponse
from ..imaging import check_content_type
from ..pipeline import ReconstructRequest
from ..schemas import INCLUDE_OPTIONS, CameraIn, FacesIn, ReconstructResponse
from ..schemas_sessions import SESSION_ID_PATTERN, SmoothingIn
from ..sessions import ScopeDep, SessionRequest, SessionsDep

router = APIRouter(tags=["reconstruct"])

ROUTE = "/reconstruct"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The multipart body cannot be parsed (`bad_request`)."},
    401: {"model": ErrorResponse, "description": "No X-API-Key while keys are configured (`missing_api_key`)."},
    403: {"model": ErrorResponse, "description": "The X-API-Key is not valid (`invalid_api_key`)."},
    429: {"model": ErrorResponse, "description": "Per-key rate limit exceeded (`rate_limited`); see Retry-After."},
    404: {"model": ErrorResponse, "description": "`device_id` is not registered (`device_not_found`)."},
    409: {"model": ErrorResponse,
          "description": "Session frame not used: its `timestamp` is not after the session's last frame "
          "(`session_timestamp_out_of_order`), or another replica changed the session meanwhile (`session_conflict`)."},
    413: {"model": ErrorResponse,
          "description": "Upload or pixel count over the limit (`payload_too_large`, `image_too_large`)."},
    415: {"model": ErrorResponse, "description": "Not a JPEG/PNG/WebP (`unsupported_media_type`)."},
    422: {"model": ErrorResponse,
          "description": "Unreadable image, bad `camera`/`faces`/`include` (`invalid_image`, `empty_image`, "
          "`invalid_camera`, `invalid_faces`, `invalid_include`, `invalid_smoothing`, `validation_error`), "
          "a form field or query parameter this route does not read (`unknown_field`), or a field sent twice "
          "(`duplicate_field`)."},
    500: {"model": ErrorResponse, "description": "The model failed on the batch (`inference_failed`; logged)."},
    503: {"model": ErrorResponse,
          "description": "Refused before the upload was read: model not loaded (`model_not_ready`, "
          "`inference_worker_down`), too busy to answer in time (`overloaded`); or later: inference queue full "
          "(`queue_full`), device records unreachable (`storage_unavailable`). See Retry-After."},
    504: {"model": ErrorResponse,
          "description": "The deadline (from arrival, upload included) passed (`deadline_exceeded`)."},
}


# Far above any valid value (64 faces of box + 5 points is ~15 kB, nested 4 deep).
_JSON_LIMITS = {"camera": (4096, 3), "faces": (65536, 4), "smoothing": (1024, 2)}


def parse_form_json(raw: str | None, model: type[BaseModel], code: str, field: str, wrap: str | None = None):
    """A JSON form field (``camera``, ``faces``, ``smoothing``) as ``model``, None when empty;
    too long, too deep or invalid: `ApiError` 422 ``code`` naming the field."""
    if raw is None or raw.strip() == "":
        return None
    max_chars, max_depth = _JSON_LIMITS[field]
    try:
        value = loads_bounded(raw, max_chars=max_chars, max_depth=max_depth)
    except JsonLimitError as exc:
        raise ApiError(422, code, f"`{field}`: {exc}") from None
    if wrap is not None:
        value = {wrap: value}
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or field}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(422, code, f"invalid `{field}`: {details}") from None


def parse_include(raw: str | None) -> set[str]:
    """The ``include`` field's comma list as a set; an unknown name: `ApiError` 422."""
    if not raw:
        return set()
    items = {x.strip() for x in raw.split(",") if x.strip()}
    unknown = items - set(INCLUDE_OPTIONS)
    if unknown:
        raise ApiError(422, "invalid_include",
                       f"unknown include {sorted(unknown)}; choose from {list(INCLUDE_OPTIONS)}")
    return items


# Names clients reach for that this route spells otherwise.
_FIELD_HINTS = {
    "landmarks": "faces", "landmarks5": "faces", "bbox": "faces", "boxes": "faces", "box": "faces",
    "intrinsics": "camera", "k": "camera", "camera_matrix": "camera",
    "file": "image", "photo": "image", "img": "image", "frame": "image",
}


def _check_fields(form_keys: Iterable[str], query_keys: Iterable[str]) -> None:
    """Refuse form fields and query parameters the route does not read, and fields sent twice.

    FastAPI drops unknown fields silently: a client that sends ``landmarks`` instead of
    ``faces`` would get detection and never know its points were ignored. The route's
    parameters all travel in the multipart form, so any query parameter that names one is
    refused as well; other query parameters (cache busters) are left alone. A field sent
    twice (two photos, two cameras) would be read as one of them, chosen by the parser.

    Args:
        form_keys: every part's name, repeated as often as it was sent.
        query_keys: the query string's parameter names.
    """
    counts = Counter(form_keys)
    repeated = sorted(k for k, n in counts.items() if n > 1 and k in FORM_FIELDS)
    if repeated:
        raise ApiError(422, "duplicate_field", "; ".join(
            f"form field `{k}` was sent {counts[k]} times" for k in repeated) + ": send each field once")
    unknown = sorted({k for k in counts if k not in FORM_FIELDS})
    misplaced = sorted({k for k in query_keys if k in FORM_FIELDS})
    if not unknown and not misplaced:
        return
    parts = []
    for name in unknown:
        hint = _FIELD_HINTS.get(name.lower()) or next(iter(difflib.get_close_matches(name, FORM_FIELDS, 1)), None)
        parts.append(f"unknown form field `{name}`" + (f" (did you mean `{hint}`?)" if hint else ""))
    for name in misplaced:
        parts.append(f"`{name}` was sent in the query string; send it as a multipart form field")
    raise ApiError(422, "unknown_field",
                   "; ".join(parts) + f". {ROUTE} reads the form fields: {', '.join(FORM_FIELDS)}")


async def _read_capped(upload: UploadFile, limit: int) -> bytes:
    # Read one byte past the limit: enough to know it is too big without holding more.
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"the image is larger than {limit} bytes")
    return data


@router.post(
    ROUTE,
    response_model=ReconstructResponse,
    response_model_exclude_unset=True,  # optional arrays appear only when asked for
    summary="Reconstruct every face in a photo: metric 6DoF pose and a dense mesh",
    responses=_ERRORS,
    # Checked at the door by the request gate before the upload is read; declared here too
    # so the OpenAPI shows the key.
    dependencies=[ApiKeyRequired],
)
async def reconstruct(
    request: Request,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, HEIC or AVIF; EXIF orientation is applied.")],
    engine: EngineDep,
    settings: SettingsDep,
    storage: OptionalStorageDep,
    sessions: SessionsDep,
    scope: ScopeDep,
    camera: Annotated[
        str | None,
        Form(
            description="JSON intrinsics in pixels: fx, fy, cx, cy, optional width/height they were calibrated at "
            "(then rescaled to this image) and distortion {k1,k2,p1,p2,k3}.",
            examples=['{"fx": 1450, "fy": 1450, "cx": 960, "cy": 540, "width": 1920, "height": 1080}'],
        ),
    ] = None,
    device_id: Annotated[
        str | None, Form(description="A registered device (see /devices) whose intrinsics to use.")
    ] = None,
    faces: Annotated[
        str | None,
        Form(
            description="JSON list of faces to use instead of detection: each {bbox: [x0,y0,x1,y1]} and/or "
            "{landmarks5: [[x,y] x5]} (left eye, right eye, nose, left mouth, right mouth in image order).",
            examples=['[{"landmarks5": [[200,100],[245,103],[222,125],[204,142],[241,144]]}]'],
        ),
    ] = None,
    max_faces: Annotated[int | None, Form(ge=1, le=64, description="At most this many faces, best first.")] = None,
    flip_tta: Annotated[
        bool | None, Form(description="Average with the mirrored crop (about 2x the inference cost; more "
                          "accurate). Omitted: the server's default (JMLR_FLIP_TTA, off unless set).")
    ] = None,
    texture: Annotated[
        bool | None, Form(description="Store the mesh with the photo as its texture (GLB and USDZ downloads carry "
                          "it). Omitted: the server's default (JMLR_MESH_TEXTURE, off unless set).")
    ] = None,
    include: Annotated[
        str | None,
        Form(description=f"Comma list of extra per-face arrays: {', '.join(INCLUDE_OPTIONS)}.",
             examples=["vertices,landmarks_2d"]),
    ] = None,
    session_id: Annotated[
        str | None,
        Form(pattern=SESSION_ID_PATTERN,
             description="Video/AR stream id of the client's choice: faces are tracked from frame to frame and "
             "their pose, mesh and blendshapes smoothed (docs/sessions.md). Unknown or expired: a new session.",
             examples=["5f0c2a9e-cam0"]),
    ] = None,
    timestamp: Annotated[
        float | None,
        Form(ge=0, le=1e12, allow_inf_nan=False,
             description="With session_id: this frame's capture time in SECONDS (any origin, increasing; divide "
             "milliseconds by 1000). Omitted: the previous frame's + 1/JMLR_SESSION_FPS."),
    ] = None,
    smoothing: Annotated[
        str | None,
        Form(description="With session_id: JSON smoothing settings for this frame (One Euro filter, "
             "docs/sessions.md), e.g. "
             '{"min_cutoff": 1.0, "beta": 0.15, "d_cutoff": 0.5, "predict": true, "size_frames": 0} or '
             '{"enabled": false}.',
             examples=['{"min_cutoff": 1.0, "beta": 0.15}']),
    ] = None,
) -> ReconstructResponse:
    # FastAPI has parsed the form already; Starlette keeps it on the request, so this reads no body.
    _check_fields([k for k, _ in (await request.form()).multi_items()], request.query_params.keys())
    check_content_type(image.content_type)
    cam = parse_form_json(camera, CameraIn, "invalid_camera", "camera")
    face_list = parse_form_json(faces, FacesIn, "invalid_faces", "faces", wrap="faces")
    req = ReconstructRequest(
        data=await _read_capped(image, settings.max_upload_bytes),
        camera=cam.to_intrinsics() if cam is not None else None,
        device_id=device_id or None,
        faces=face_list.faces if face_list is not None else None,
        max_faces=max_faces,
        flip_tta=flip_tta,
        texture=texture,
        include=parse_include(include),
        base_url=str(request.base_url),
    )
    # The gate set the deadline when the request arrived and cancels the work past it;
    # the engine checks it between stages so late work is not started.
    deadline = getattr(request.state, "deadline", None)
    if session_id is None:
        if timestamp is not None or smoothing is not None:
            raise ApiError(422, "invalid_session", "`timestamp` and `smoothing` need a `session_id`")
        result = await engine.reconstruct(req, storage, deadline)
    else:
        if not engine.ready:
            raise engine.not_ready_error()
        session = SessionRequest(session_id, timestamp,
                                 parse_form_json(smoothing, SmoothingIn, "invalid_smoothing", "smoothing"))
        result = await sessions.run_frame(scope, session, engine.model.topology,
                                          lambda frame: engine.reconstruct(req, storage, deadline, frame))
    request.state.encode_start = time.perf_counter()
    return result


def _form_fields(endpoint: Any) -> tuple[str, ...]:
    """The multipart fields an endpoint declares (its ``File``/``Form`` parameters), in order."""
    hints = get_type_hints(endpoint, include_extras=True)
    return tuple(name for name, hint in hints.items()
                 if any(isinstance(m, params.Form) for m in getattr(hint, "__metadata__", ())))


FORM_FIELDS = _form_fields(reconstruct)
