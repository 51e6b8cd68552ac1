"""Request/response models for ``/devices`` and ``/mesh``.

A device is a calibrated camera (a phone model, a webcam): its intrinsics in pixels of
the image size they were calibrated at. ``/reconstruct`` can then name a device instead
of sending intrinsics with every photo.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jmlr.facemodel.topology import Topology, default_topology_path

# At least one character that is not a dot: "." and ".." are path segments that clients
# and proxies normalise away, so such a device could be created but never reached.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"

DeviceId = Annotated[
    str,
    Field(
        pattern=DEVICE_ID_PATTERN,
        min_length=1,
        max_length=64,
        description="Letters, digits, '_', '.', '-', not only dots; 1 to 64 characters.",
    ),
]
# allow_inf_nan=False: NaN would pass every "> 0" check silently. Upper bounds: 1e308
# passes "finite" and overflows later. strict=True: a JSON `false` is not 0.0.
Focal = Annotated[
    float, Field(ge=1.0, le=1e6, allow_inf_nan=False, strict=True, description="Focal length in pixels.")
]
Coeff = Annotated[float, Field(ge=-1e3, le=1e3, allow_inf_nan=False, strict=True)]
Side = Annotated[int, Field(gt=0, le=100_000, strict=True)]

_EXAMPLE = {
    "device_id": "pixel-7-main",
    "name": "Pixel 7, main camera, 4080x3072",
    "fx": 3220.5,
    "fy": 3220.5,
    "cx": 2040.0,
    "cy": 1536.0,
    "width": 4080,
    "height": 3072,
    "distortion": {"k1": 0.061, "k2": -0.112, "p1": 0.0, "p2": 0.0, "k3": 0.0},
}


class Distortion(BaseModel):
    """OpenCV's (k1, k2, p1, p2, k3) radial-tangential model; omitted terms are 0."""

    model_config = ConfigDict(extra="forbid")

    k1: Coeff = 0.0
    k2: Coeff = 0.0
    p1: Coeff = 0.0
    p2: Coeff = 0.0
    k3: Coeff = 0.0


class DeviceIn(BaseModel):
    """A device's calibration. Used as the PUT body (a full replacement)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{k: v for k, v in _EXAMPLE.items() if k != "device_id"}]},
    )

    name: Annotated[str | None, Field(max_length=200)] = None
    fx: Focal
    fy: Focal
    cx: Annotated[float, Field(allow_inf_nan=False, strict=True, description="Principal point x in pixels.")]
    cy: Annotated[float, Field(allow_inf_nan=False, strict=True, description="Principal point y in pixels.")]
    width: Annotated[Side, Field(description="Calibrated image width in pixels.")]
    height: Annotated[Side, Field(description="Calibrated image height in pixels.")]
    distortion: Distortion | None = None

    @model_validator(mode="after")
    def _principal_point_inside(self) -> "DeviceIn":
        # A principal point off the sensor is almost always a unit or axis mix-up
        # (e.g. normalised coordinates, or width and height swapped).
        if not 0 <= self.cx <= self.width:
            raise ValueError(f"cx={self.cx} is outside the image width [0, {self.width}]")
        if not 0 <= self.cy <= self.height:
            raise ValueError(f"cy={self.cy} is outside the image height [0, {self.height}]")
        return self


class DeviceCreate(DeviceIn):
    """POST body: like ``DeviceIn`` plus an optional id (generated when absent)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    device_id: DeviceId | None = None


class Device(BaseModel):
    """A stored device."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**_EXAMPLE, "created": "2024-05-01T12:00:00Z", "updated": "2024-05-01T12:00:00Z"}
            ]
        }
    )

    device_id: str
    name: str | None = None
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: Distortion | None = None
    created: datetime
    updated: datetime


class DeviceList(BaseModel):
    devices: list[Device]


class MeshModelInfo(BaseModel):
    name: str | None = None
    version: str | None = None


class MeshUrls(BaseModel):
    glb: str
    obj: str
    ply: str
    self_: str = Field(alias="self")

    model_config = ConfigDict(populate_by_name=True)


# The example shows the counts of the packaged default topology rather than numbers
# written here, which would go stale when a model with another topology is served.
_EXAMPLE_TOPOLOGY = Topology.load(default_topology_path())


class MeshInfo(BaseModel):
    """``GET /mesh/{id}``: what a stored mesh is and where to download it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "mesh_id": "q3Wm1c0V2yq8Vv1Yd7mXbA",
                    "num_vertices": _EXAMPLE_TOPOLOGY.num_vertices,
                    "num_faces": _EXAMPLE_TOPOLOGY.num_triangles,
                    "model": {"name": "jmlr_r18d_128_cpu", "version": "1"},
                    "created": "2024-05-01T12:00:00Z",
                    "expires_at": "2024-05-01T13:00:00Z",
                    "image_size": [800, 800],
                    "camera": {"fx": 629.77, "fy": 629.77, "cx": 400.0, "cy": 400.0},
                    "R_cv": [[1, 0, 0], [0, -1, 0], [0, 0, -1]],
                    "t_cv": [0.0, 0.0, 0.5],
                    "urls": {
                        "glb": "http://localhost:8000/mesh/q3Wm1c0V2yq8Vv1Yd7mXbA.glb",
                        "obj": "http://localhost:8000/mesh/q3Wm1c0V2yq8Vv1Yd7mXbA.obj",
                        "ply": "http://localhost:8000/mesh/q3Wm1c0V2yq8Vv1Yd7mXbA.ply",
                        "self": "http://localhost:8000/mesh/q3Wm1c0V2yq8Vv1Yd7mXbA",
                    },
                }
            ]
        }
    )

    mesh_id: str
    num_vertices: int
    num_faces: int
    model: MeshModelInfo
    created: datetime
    expires_at: datetime
    image_size: list[int] | None = Field(None, description="(width, height) of the source image.")
    camera: dict | None = Field(None, description="Intrinsics the mesh was reconstructed with.")
    R_cv: list[list[float]] = Field(description="World → OpenCV camera rotation: X_cam = R_cv @ V + t_cv.")
    t_cv: list[float] = Field(description="World → OpenCV camera translation in metres.")
    urls: MeshUrls
