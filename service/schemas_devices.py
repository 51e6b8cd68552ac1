"""Request/response models for ``/devices``.

A device is a calibrated camera (a phone model, a webcam): its intrinsics in pixels of
the image size they were calibrated at. ``/reconstruct`` can then name a device instead
of sending intrinsics with every photo.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

from .schemas import Distortion

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
Side = Annotated[int, Field(gt=0, le=100_000, strict=True)]

_EXAMPLE: JsonDict = {
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
    def _principal_point_inside(self) -> DeviceIn:
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
