"""Convert a clone of ICT-FaceKit into the face model npz (``jmlr facemodel build``).

ICT-FaceKit (https://github.com/ICT-VGL/ICT-FaceKit; MIT License, Copyright (c) 2020
USC Institute for Creative Technologies) ships its morphable head as OBJ files:

- ``FaceXModel/generic_neutral_mesh.obj``: the neutral head (quads, UVs, ``usemtl``);
- ``FaceXModel/identity000.obj`` ... ``identity099.obj``: the neutral plus one identity
  mode of one standard deviation each;
- ``FaceXModel/<name>.obj`` for the 53 ARKit-named expressions (``jawOpen.obj``,
  ``eyeBlink_L.obj``, ...): the neutral plus one blendshape at weight 1.

:func:`build_facemodel` reads them and writes the npz that :class:`FaceModel` loads (the
format of ``../shared/facemodel/README.md``):

- coordinates are converted from centimetres to **metres**;
- the modes are stored as float16 **deltas from the neutral**;
- only the first :data:`NUM_VERTICES` vertices are kept (the head, mouth, teeth and
  eyeballs; ICT's eyelashes, lacrimal fluid and eye-blend shells after them are dropped
  with the polygons that use them);
- ``quads`` (P, 4) int32, a triangle has -1 as its 4th index; ``quads_uv`` likewise into
  ``uv`` (all the OBJ's ``vt`` rows, float32); ``face_material`` (P,) int16 indexes
  ``material_names`` (the ``usemtl`` names in order of first use);
- ``region_names`` / ``region_ranges`` and ``landmarks68`` are constants below: ICT's
  vertex order fixes them.

Attribution: any model, dataset or picture made from the output carries the
ICT-FaceKit attribution above (see NOTICE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmlr.facemodel.npz import write_npz

__all__ = [
    "EXPRESSION_NAMES",
    "LANDMARKS68",
    "NUM_IDENTITY",
    "NUM_VERTICES",
    "REGIONS",
    "build_facemodel",
    "read_obj",
]

CM_TO_M = 0.01
NUM_IDENTITY = 100
NUM_VERTICES = 24591

# The 53 ARKit-named expression blendshapes of ICT-FaceKit, in the npz's order.
EXPRESSION_NAMES: tuple[str, ...] = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L",
    "browOuterUp_R", "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R",
    "eyeBlink_L", "eyeBlink_R", "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L",
    "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R",
    "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R", "mouthFrown_L",
    "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R",
    "mouthPress_L", "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R",
    "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L",
    "noseSneer_R",
)

# (name, first, last) vertex index, inclusive: ICT-FaceKit's README table.
REGIONS: tuple[tuple[str, int, int], ...] = (
    ("face", 0, 9408),
    ("narrow_face", 0, 6705),
    ("head_neck", 9409, 11247),
    ("mouth_socket", 11248, 13293),
    ("eye_socket_left", 13294, 13677),
    ("eye_socket_right", 13678, 14061),
    ("gums_tongue", 14062, 17038),
    ("teeth", 17039, 21450),
    ("eyeball_left", 21451, 23020),
    ("eyeball_right", 23021, 24590),
    ("sclera_left", 21451, 22220),
    ("iris_left", 22221, 23020),
    ("sclera_right", 23021, 23790),
    ("iris_right", 23791, 24590),
)

# iBUG-68 landmark vertices of the ICT neutral head.
LANDMARKS68: tuple[int, ...] = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608,
    3272, 4088, 3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978,
    4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511,
    3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346,
    6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)


def read_obj(path: str | Path, with_faces: bool = True) -> dict[str, np.ndarray | list[str]]:
    """Parse a Wavefront OBJ of triangles and quads.

    Returns a dict with ``vertices`` (V, 3) float64 (file units) and, if ``with_faces``,
    ``uv`` (T, 2) float32, ``quads`` / ``quads_uv`` (P, 4) int64 (0-based, -1 pads a
    triangle; ``quads_uv`` is -1 where a corner has no ``vt``), ``face_material`` (P,)
    int64 into ``material_names`` (list, order of first ``usemtl``; -1 before any).
    """
    verts: list[tuple[float, float, float]] = []
    uvs: list[tuple[float, float]] = []
    polys: list[list[int]] = []
    polys_uv: list[list[int]] = []
    mats: list[int] = []
    names: list[str] = []
    current = -1
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                x, y, z = line.split()[1:4]
                verts.append((float(x), float(y), float(z)))
            elif not with_faces:
                continue
            elif line.startswith("vt "):
                u, v = line.split()[1:3]
                uvs.append((float(u), float(v)))
            elif line.startswith("usemtl"):
                name = line.split(maxsplit=1)[1].strip()
                if name not in names:
                    names.append(name)
                current = names.index(name)
            elif line.startswith("f "):
                corners = line.split()[1:]
                if not 3 <= len(corners) <= 4:
                    raise ValueError(f"{path}: polygon with {len(corners)} corners (only triangles and quads)")
                vi, ti = [], []
                for c in corners:
                    parts = c.split("/")
                    v = int(parts[0])
                    vi.append(v - 1 if v > 0 else len(verts) + v)
                    if len(parts) > 1 and parts[1]:
                        t = int(parts[1])
                        ti.append(t - 1 if t > 0 else len(uvs) + t)
                    else:
                        ti.append(-1)
                pad = 4 - len(vi)
                polys.append(vi + [-1] * pad)
                polys_uv.append(ti + [-1] * pad)
                mats.append(current)
    out: dict[str, np.ndarray | list[str]] = {"vertices": np.asarray(verts, np.float64).reshape(-1, 3)}
    if with_faces:
        out.update(
            uv=np.asarray(uvs, np.float32).reshape(-1, 2),
            quads=np.asarray(polys, np.int64).reshape(-1, 4),
            quads_uv=np.asarray(polys_uv, np.int64).reshape(-1, 4),
            face_material=np.asarray(mats, np.int64),
            material_names=names,
        )
    return out


def build_facemodel(
    ict_dir: str | Path,
    out: str | Path,
    num_identity: int = NUM_IDENTITY,
    num_vertices: int = NUM_VERTICES,
    expression_names: tuple[str, ...] = EXPRESSION_NAMES,
    regions: tuple[tuple[str, int, int], ...] = REGIONS,
    landmarks68: tuple[int, ...] = LANDMARKS68,
    progress: bool = False,
) -> Path:
    """Write the face model npz from an ICT-FaceKit clone (see the module docstring).

    Args:
        ict_dir: the clone (holding ``FaceXModel/``) or its ``FaceXModel`` folder.
        out: the npz to write.
        num_identity, num_vertices, expression_names, regions, landmarks68: the layout
            (ICT-FaceKit's by default; tests pass a tiny one).
        progress: show a tqdm bar.

    Raises:
        FileNotFoundError: a needed OBJ is missing (the message names it).
        ValueError: an OBJ's vertex count differs from the neutral's.
    """
    ict_dir = Path(ict_dir)
    src = ict_dir / "FaceXModel" if (ict_dir / "FaceXModel").is_dir() else ict_dir
    neutral_path = src / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise FileNotFoundError(f"{neutral_path} not found: give the root of an ICT-FaceKit clone")
    files = [src / f"identity{k:03d}.obj" for k in range(num_identity)]
    files += [src / f"{name}.obj" for name in expression_names]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ICT-FaceKit OBJ(s) missing, e.g. {missing[0]}")
    mesh = read_obj(neutral_path)
    full = mesh["vertices"]
    if full.shape[0] < num_vertices:
        raise ValueError(f"{neutral_path} has {full.shape[0]} vertices, fewer than {num_vertices}")
    neutral = full[:num_vertices]
    if progress:
        from tqdm import tqdm

        files_iter = tqdm(files, desc="ICT-FaceKit OBJs", unit="obj")
    else:
        files_iter = files
    deltas = np.empty((len(files), num_vertices, 3), np.float16)
    for i, p in enumerate(files_iter):
        v = read_obj(p, with_faces=False)["vertices"]
        if v.shape[0] != full.shape[0]:
            raise ValueError(f"{p} has {v.shape[0]} vertices, the neutral {full.shape[0]}")
        deltas[i] = ((v[:num_vertices] - neutral) * CM_TO_M).astype(np.float16)

    quads, quads_uv = mesh["quads"], mesh["quads_uv"]
    keep = (quads < num_vertices).all(1)
    return write_npz(
        out,
        neutral=(neutral * CM_TO_M).astype(np.float32),
        identity_basis=deltas[:num_identity],
        expression_basis=deltas[num_identity:],
        expression_names=np.array(expression_names),
        quads=quads[keep].astype(np.int32),
        quads_uv=quads_uv[keep].astype(np.int32),
        uv=mesh["uv"],
        face_material=mesh["face_material"][keep].astype(np.int16),
        material_names=np.array(mesh["material_names"]),
        landmarks68=np.array(landmarks68, np.int32),
        region_names=np.array([r[0] for r in regions]),
        region_ranges=np.array([r[1:] for r in regions], np.int32),
    )
