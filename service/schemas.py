"""Request parts and the response of ``POST /reconstruct``.

Conventions (see docs/design.md): pixels have the centre of the top-left pixel at
(0, 0); poses are world (head) → OpenCV camera (x right, y down, z forward), metres.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jmlr.geometry.intrinsics import Intrinsics

from .schemas_meshes import MeshUrls
from .schemas_sessions import SessionOut

# Bounds on everything a client sends: a coordinate of 1e308 passed "finite" and then
# overflowed in the crop's SVD or the rescaled K. strict=True: `false` is not 0.0.
MAX_ABS_PIXEL = 1e6
MAX_FOCAL_PX = 1e6
Pixel = Annotated[float, Field(ge=-MAX_ABS_PIXEL, le=MAX_ABS_PIXEL, allow_inf_nan=False, strict=True)]
FocalPx = Annotated[float, Field(ge=1.0, le=MAX_FOCAL_PX, allow_inf_nan=False, strict=True)]
ImageSide = Annotated[int | None, Field(gt=0, le=100_000, strict=True)]
Point2 = Annotated[list[Pixel], Field(min_length=2, max_length=2)]
Coeff = Annotated[float, Field(ge=-1e3, le=1e3, allow_inf_nan=False, strict=True)]

INCLUDE_OPTIONS = ("vertices", "vertices_camera", "landmarks_2d", "landmarks_68", "blendshapes")
CameraSource = Literal["request", "device", "exif", "default_fov"]
MeshStatus = Literal["stored", "pose_failed", "storage_unavailable", "storage_full", "storage_error"]


# ----------------------------------------------------------------------------- request parts


class Distortion(BaseModel):
    """OpenCV's (k1, k2, p1, p2, k3) radial-tangential model; omitted terms are 0."""

    model_config = ConfigDict(extra="forbid")

    k1: Coeff = 0.0
    k2: Coeff = 0.0
    p1: Coeff = 0.0
    p2: Coeff = 0.0
    k3: Coeff = 0.0


class CameraIn(BaseModel):
    """Intrinsics in pixels. With ``width``/``height`` (the size they were calibrated
    at) they are rescaled to the uploaded image; without, they must already be in the
    uploaded image's pixels (after EXIF rotation)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"fx": 1450.0, "fy": 1450.0, "cx": 960.0, "cy": 540.0, "width": 1920, "height": 1080}]
        },
    )

    fx: FocalPx
    fy: FocalPx
    cx: Pixel
    cy: Pixel
    width: ImageSide = None
    height: ImageSide = None
    distortion: Distortion | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> CameraIn:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height (the calibration size) or neither")
        return self

    def to_intrinsics(self) -> Intrinsics:
        return Intrinsics.from_dict(self.model_dump())


class FaceIn(BaseModel):
    """A client-located face: a box, five points, or both (detection is skipped)."""

    model_config = ConfigDict(extra="forbid")

    bbox: Annotated[list[Pixel] | None, Field(min_length=4, max_length=4, description="x0, y0, x1, y1 px")] = None
    landmarks5: Annotated[
        list[Point2] | None,
        Field(min_length=5, max_length=5,
              description="left eye, right eye, nose, left mouth, right mouth (image order)"),
    ] = None

    @model_validator(mode="after")
    def _something(self) -> FaceIn:
        if self.bbox is None and self.landmarks5 is None:
            raise ValueError("each face needs a bbox or landmarks5")
        if self.bbox is not None and not (self.bbox[2] > self.bbox[0] and self.bbox[3] > self.bbox[1]):
            raise ValueError("bbox must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        return self


class FacesIn(BaseModel):
    faces: Annotated[list[FaceIn], Field(max_length=64)]


# ----------------------------------------------------------------------------- response


class Pose(BaseModel):
    """Head (world) → camera pose in the **OpenCV camera frame** (x right, y down, z
    forward): ``X_cam = rotation @ V + translation``, metres. ``matrix`` is the same as a
    4×4 ``[[R, t], [0, 0, 0, 1]]``. Yaw/pitch/roll are the head's angles seen from the
    camera (0, 0, 0 = facing the camera upright), ``R = Ry(yaw) Rx(pitch) Rz(roll)`` in
    the OpenGL-style frame (y up); degrees."""

    rotation: list[list[float]] = Field(description="3×3, world → OpenCV camera")
    translation: list[float] = Field(description="metres, OpenCV camera frame")
    rotation_vector: list[float] = Field(description="Rodrigues vector of `rotation`, radians")
    quaternion_wxyz: list[float] = Field(description="unit quaternion of `rotation`, (w, x, y, z), w ≥ 0")
    matrix: list[list[float]] = Field(description="4×4 [[R, t], [0, 0, 0, 1]]")
    yaw: float
    pitch: float
    roll: float


class FaceOut(BaseModel):
    bbox: list[float] = Field(description="x0, y0, x1, y1 image px")
    score: float | None = Field(description="detector confidence; null for client landmarks")
    source: Literal["detector", "client_landmarks", "client_bbox", "tracked"] = Field(
        description="'tracked': cropped where the session's previous frame put this face (no detection)")
    landmarks5: list[list[float]] = Field(description="the 5 points the crop was aligned on, image px")
    pose: Pose
    pose_ok: bool = Field(description="false when PnP failed or put the face behind the camera")
    reprojection_rms_px: float | None = Field(
        description="RMS px between the network's 2D points and the posed mesh's projection")
    distance_m: float = Field(description="distance from the camera centre to the head origin, metres")
    landmarks_68: list[list[float]] | None = Field(
        None, description="68 iBUG points of the posed mesh projected, image px; the side jaw points on the "
        "face's visible outline (iBUG 300-W's convention, docs/api.md)")
    landmarks_2d: list[list[float]] | None = Field(
        None, description="every vertex of the posed mesh projected, image px")
    vertices: list[list[float]] | None = Field(None, description="world (head frame) vertices, metres")
    vertices_camera: list[list[float]] | None = Field(None, description="vertices in the OpenCV camera frame, metres")
    blendshapes: dict[str, float] | None = Field(
        None,
        description="ARKit blendshape weights in [0, 1] (51 names: ARKit's 52 less tongueOut, which the face "
        "model lacks), predicted by the network's expression head or fitted to the predicted mesh (see "
        "model.blendshapes); only with include=blendshapes",
        examples=[{"eyeBlinkLeft": 0.02, "jawOpen": 0.41, "mouthSmileLeft": 0.0}],
    )
    track_id: int | None = Field(
        None, description="in a session: the same number for the same face across frames (null: not followed)")
    mesh_id: str | None = None
    mesh_urls: MeshUrls | None = None
    mesh_status: MeshStatus | None = Field(
        None,
        description="'stored' (mesh_id and mesh_urls are set), 'pose_failed' (not stored: pose_ok is false), "
        "'storage_unavailable' or 'storage_full' (not stored; the response also carries a warning)",
    )


class CameraOut(BaseModel):
    K: list[list[float]] = Field(description="3×3 intrinsics in pixels of the uploaded (EXIF-rotated) image")
    fx: float
    fy: float
    cx: float
    cy: float
    source: CameraSource
    distortion: Distortion | None = None
    fov_x_deg: float
    fov_y_deg: float


class ModelOut(BaseModel):
    name: str
    version: str
    num_vertices: int
    num_triangles: int
    input_size: int
    device: str
    blendshapes: Literal["head", "fit", "none"] = Field(
        description="how include=blendshapes is answered: 'head' (the network predicts the weights), 'fit' "
        "(fitted to the predicted mesh) or 'none' (the model's topology has no blendshape basis)")


class ImageOut(BaseModel):
    width: int
    height: int
    format: str


class ReconstructResponse(BaseModel):
    model: ModelOut
    camera: CameraOut
    image: ImageOut
    faces: list[FaceOut]
    timings_ms: dict[str, float] = Field(
        description="per stage: decode, detect (or track: a session frame cropped from its tracks), crop, infer, "
        "pnp, session (tracking and smoothing), redetect (a lost track), blendshapes, store, total")
    warnings: list[str] = Field(default_factory=list)
    session: SessionOut | None = Field(None, description="only with `session_id`: this frame in its session")
