"""Issue 11's HTTP checks against any checkout, in process (TestClient, tiny random model):
the hostile corpus, the schema-breaking 200s, the smaller items, and Redis down.

    python bench/reliability_checks.py .                  # this checkout
    git archive <commit> service jmlr | tar -x -C /tmp/before
    python bench/reliability_checks.py /tmp/before        # e.g. the commit before the fix

Prints one JSON object; docs/reliability.md compares the two. Only the service's public
API is used, so it runs against old checkouts too.
"""

from __future__ import annotations

import collections
import io
import json
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHECKOUT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else BENCH.parent
sys.path[:0] = [str(CHECKOUT), str(BENCH)]

from fastapi.testclient import TestClient  # noqa: E402
from hostile_corpus import LM5, all_cases  # noqa: E402
from PIL import Image  # noqa: E402

from jmlr.store import make_random_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

DEAD_REDIS = "redis://127.0.0.1:1/0"


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=tmp / "store", set_default=True)

    def settings(**kw) -> Settings:
        base = dict(_env_file=None, model_store=tmp / "store", data_dir=tmp / "var", device="cpu", warmup=False,
                    api_keys=["k"], max_upload_bytes=2_000_000, max_image_pixels=4_000_000)
        if "rate_limit_per_minute" in Settings.model_fields:
            base["rate_limit_per_minute"] = 0
        base.update(kw)
        return Settings(**base)

    def client(s: Settings) -> TestClient:
        return TestClient(create_app(s), raise_server_exceptions=False, headers={"X-API-Key": "k"})

    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (120, 100, 90)).save(buf, "JPEG")
    img = buf.getvalue()
    out: dict = {}
    with client(settings()) as c:
        statuses: collections.Counter = collections.Counter()
        bad = []
        cases = all_cases(img)
        for name, files, data in cases:
            r = c.post("/reconstruct", files=files or None, data=data)
            statuses[str(r.status_code)] += 1
            if r.status_code >= 500:
                bad.append((name, r.status_code))
            elif r.status_code == 200:
                body = r.json()
                lm = [v for f in body["faces"] for p in (f.get("landmarks_68") or []) for v in p]
                if body["camera"]["fx"] is None or None in lm:
                    bad.append((name, "200 with nulls"))
                elif "faces" in data and any(f["distance_m"] > 10 for f in body["faces"]):
                    bad.append((name, f"200, distance {body['faces'][0]['distance_m']:.1f} m"))
        out["corpus"] = {"cases": len(cases), "statuses": dict(statuses), "bad": bad}
        out["405_allow"] = c.delete("/devices").headers.get("allow")
        out["mesh_id_with_dot"] = c.get("/mesh/abc.def").status_code
        out["device_ids_dot_dotdot"] = [
            c.post("/devices", json={"device_id": d, "fx": 500, "fy": 500, "cx": 1, "cy": 1, "width": 2,
                                     "height": 2}).status_code for d in (".", "..")]
        out["docs_page_uses_cdn"] = "cdn" in c.get("/docs").text
        out["reconstruct_without_key"] = c.post(
            "/reconstruct", files={"image": ("a", img, "image/jpeg")}, headers={"X-API-Key": ""}).status_code
        spec = c.get("/openapi.json").json()
        out["openapi_reconstruct_codes"] = sorted(spec["paths"]["/reconstruct"]["post"]["responses"])
    with client(settings(model_name=str(tmp / "nowhere" / "m"))) as c:
        out["readyz_shows_server_path"] = str(tmp) in c.get("/readyz").text
    with client(settings(storage="redis", redis_url=DEAD_REDIS, data_dir=tmp / "var2")) as c:
        out["redis_down_readyz"] = c.get("/readyz").status_code
        out["redis_down_routes"] = {p: c.get(p).status_code
                                    for p in ("/devices", "/devices/x", "/mesh/abcdefabcdefabcdefabcd.glb")}
        r = c.post("/reconstruct", files={"image": ("a", img, "image/jpeg")},
                   data={"faces": json.dumps([{"landmarks5": LM5}])})
        face = r.json()["faces"][0] if r.status_code == 200 else {}
        out["redis_down_reconstruct"] = {
            "status": r.status_code, "mesh_status": face.get("mesh_status"), "has_mesh_urls": "mesh_urls" in face,
            "warns": any("NOT stored" in w for w in r.json().get("warnings", [])) if r.status_code == 200 else None,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
