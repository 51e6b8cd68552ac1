"""``/devices``: register calibrated cameras so requests can name one instead of sending K."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status

from service.deps import ApiKeyRequired, StorageDep
from service.errors import AUTH_RESPONSES, ApiError, ErrorResponse, OpenApiResponses
from service.schemas_devices import DEVICE_ID_PATTERN, Device, DeviceCreate, DeviceIn, DeviceList

router = APIRouter(prefix="/devices", tags=["devices"])

DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, max_length=64, examples=["pixel-7-main"])]

_NOT_FOUND: OpenApiResponses = {404: {"model": ErrorResponse, "description": "No device with this id."}}
_AUTH = AUTH_RESPONSES


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _not_found(device_id: str) -> ApiError:
    return ApiError(404, "device_not_found", f"no device {device_id!r}")


@router.get("", response_model=DeviceList, summary="List registered devices")
def list_devices(storage: StorageDep) -> DeviceList:
    return DeviceList(devices=[Device.model_validate(r) for r in storage.list_devices()])


@router.post(
    "",
    response_model=Device,
    status_code=status.HTTP_201_CREATED,
    summary="Register a device",
    dependencies=[ApiKeyRequired],
    responses={409: {"model": ErrorResponse, "description": "The device id is taken."}, **_AUTH},
)
def create_device(body: DeviceCreate, storage: StorageDep, response: Response) -> Device:
    device_id = body.device_id or f"dev-{secrets.token_hex(6)}"
    now = _now()
    record = {**body.model_dump(exclude={"device_id"}), "device_id": device_id, "created": now, "updated": now}
    if not storage.create_device(device_id, record):
        raise ApiError(409, "device_exists", f"device {device_id!r} already exists; PUT to replace it")
    response.headers["Location"] = f"/devices/{device_id}"
    return Device.model_validate(record)


@router.get("/{device_id}", response_model=Device, summary="Get one device", responses=_NOT_FOUND)
def get_device(device_id: DeviceIdPath, storage: StorageDep) -> Device:
    record = storage.get_device(device_id)
    if record is None:
        raise _not_found(device_id)
    return Device.model_validate(record)


@router.put(
    "/{device_id}",
    response_model=Device,
    summary="Replace a device's calibration",
    dependencies=[ApiKeyRequired],
    responses={**_NOT_FOUND, **_AUTH},
)
def replace_device(
    device_id: DeviceIdPath,
    body: Annotated[DeviceIn, Body()],
    storage: StorageDep,
) -> Device:
    # One atomic replace-if-exists: get-then-put could bring back a device deleted meanwhile.
    record = storage.replace_device(device_id, {**body.model_dump(), "device_id": device_id, "updated": _now()})
    if record is None:
        raise _not_found(device_id)
    return Device.model_validate(record)


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a device",
    dependencies=[ApiKeyRequired],
    responses={**_NOT_FOUND, **_AUTH},
)
def delete_device(device_id: DeviceIdPath, storage: StorageDep) -> Response:
    if not storage.delete_device(device_id):
        raise _not_found(device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
