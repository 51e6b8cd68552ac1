"""MediaPipe face mesh over face crops; runs inside the realism virtualenv, not the project's.

    python realism_worker.py CROPS.json OUT.json

``CROPS.json`` is a list of PNG paths. ``OUT.json`` gets the MediaPipe version, the face
mesh tessellation edges (for drawing) and, per crop, its 468 landmarks in crop pixels
(OpenCV convention: the centre of the top-left pixel is (0, 0)) or null where MediaPipe
found no face. The face mesh runs with its default thresholds (detection and presence
0.5, one face, no iris refinement) in static-image mode, since the crops are unrelated
images, not a video.

MediaPipe 0.10.21 needs numpy < 2, which the project's environment does not have, so
`bench/realism.py` makes a virtualenv for it and runs this file there; it imports nothing
from the project.
"""

from __future__ import annotations

import json
import sys


def main(crops_json: str, out_json: str) -> int:
    import cv2
    import mediapipe as mp

    paths = json.loads(open(crops_json).read())
    fm = mp.solutions.face_mesh
    results = []
    with fm.FaceMesh(static_image_mode=True) as mesh:
        for path in paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            h, w = bgr.shape[:2]
            found = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).multi_face_landmarks
            if not found:
                results.append({"path": path, "landmarks": None})
                continue
            # MediaPipe normalises by the image extent (0..1 edge to edge): pixel centres sit at (i + 0.5) / w.
            pts = [[p.x * w - 0.5, p.y * h - 0.5] for p in found[0].landmark]
            results.append({"path": path, "landmarks": pts})
    out = {"mediapipe": mp.__version__, "edges": sorted([int(a), int(b)] for a, b in fm.FACEMESH_TESSELATION),
           "results": results}
    with open(out_json, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
