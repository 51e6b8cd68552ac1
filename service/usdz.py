"""A triangle mesh as USDZ, the format of Apple's AR Quick Look and RealityKit.

A USDZ file is a zip archive whose entries are stored uncompressed, each entry's data
starting at a multiple of 64 bytes, the first entry being the root layer (Pixar's
"usdz file format specification"). The root layer here is USDA text, as three.js's
USDZExporter (what `<model-viewer>` hands to AR Quick Look) writes it: one ``Mesh`` prim
with a UsdPreviewSurface material (grey, or the photo's texture beside the layer in the
package), metres, y up, so a head-frame mesh stands upright at its real size in AR. The
tests read it back with Pixar's own USD library (usd-core) and run its USDZ package
validators.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

USDZ_ALIGNMENT = 64
_ZIP_LOCAL_HEADER = 30  # bytes before a local entry's name
_PAD_HEADER = 4  # an extra-field block: 2-byte id, 2-byte size


def _tuples(a: np.ndarray) -> str:
    return ", ".join("(" + ", ".join(f"{v:.7g}" for v in row) + ")" for row in a)


def mesh_usda(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None,
              uv: np.ndarray | None = None, texture_file: str | None = None, name: str = "Face") -> str:
    """USDA text of one triangle mesh.

    vertices: (N, 3) metres, y up; faces: (F, 3) vertex indices, counter-clockwise seen
    from outside (glTF's and USD's default ``rightHanded`` orientation). Vertex i stays
    vertex i (no welding or reordering), as in the other download formats. ``normals``
    (N, 3) unit vertex normals, written when given (AR Quick Look shades a mesh without
    them poorly; three.js's USDZ exporter writes them too). With ``uv``
    (N, 2, v up: USD's ``st``) and ``texture_file`` (a path inside the package), the
    material reads its colour from that texture; without, it is plain grey.
    """
    v = np.asarray(vertices, np.float32).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside 0..{len(v) - 1}")
    extent = np.stack([v.min(axis=0), v.max(axis=0)]) if len(v) else np.zeros((2, 3), np.float32)
    normal_attr = ""
    if normals is not None:
        normal_attr = f"""
        normal3f[] normals = [{_tuples(np.asarray(normals, np.float32).reshape(len(v), 3))}] (
            interpolation = "vertex"
        )"""
    textured = uv is not None and texture_file is not None
    st = ""
    colour = "color3f inputs:diffuseColor = (0.8, 0.8, 0.8)"
    texture_shaders = ""
    if textured:
        st_values = np.asarray(uv, np.float32).reshape(len(v), 2)
        st = f"""
        texCoord2f[] primvars:st = [{_tuples(st_values)}] (
            interpolation = "vertex"
        )"""
        colour = f"color3f inputs:diffuseColor.connect = </{name}/material/texture.outputs:rgb>"
        texture_shaders = f"""

        def Shader "st_reader"
        {{
            uniform token info:id = "UsdPrimvarReader_float2"
            string inputs:varname = "st"
            float2 outputs:result
        }}

        def Shader "texture"
        {{
            uniform token info:id = "UsdUVTexture"
            asset inputs:file = @{texture_file}@
            token inputs:sourceColorSpace = "sRGB"
            float2 inputs:st.connect = </{name}/material/st_reader.outputs:result>
            token inputs:wrapS = "clamp"
            token inputs:wrapT = "clamp"
            float3 outputs:rgb
        }}"""
    return f"""#usda 1.0
(
    defaultPrim = "{name}"
    metersPerUnit = 1
    upAxis = "Y"
)

def Xform "{name}"
{{
    def Mesh "mesh" (
        prepend apiSchemas = ["MaterialBindingAPI"]
    )
    {{
        float3[] extent = [{_tuples(extent)}]
        int[] faceVertexCounts = [{", ".join(["3"] * len(f))}]
        int[] faceVertexIndices = [{", ".join(str(int(i)) for i in f.ravel())}]
        rel material:binding = </{name}/material>{normal_attr}
        point3f[] points = [{_tuples(v)}]{st}
        uniform token subdivisionScheme = "none"
    }}

    def Material "material"
    {{
        token outputs:surface.connect = </{name}/material/surface.outputs:surface>

        def Shader "surface"
        {{
            uniform token info:id = "UsdPreviewSurface"
            {colour}
            float inputs:metallic = 0
            float inputs:roughness = 0.6
            token outputs:surface
        }}{texture_shaders}
    }}
}}
"""


def usdz_package(entries: dict[str, bytes]) -> bytes:
    """A USDZ archive of ``entries`` (name -> bytes, the root layer first): stored, each
    entry's data padded by a zip extra field to start at a multiple of 64 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            start = buf.tell() + _ZIP_LOCAL_HEADER + len(name.encode()) + _PAD_HEADER
            pad = -start % USDZ_ALIGNMENT
            info.extra = b"\0\0" + pad.to_bytes(2, "little") + b"\0" * pad  # id 0: ignored by readers
            z.writestr(info, data)
    return buf.getvalue()


def mesh_usdz(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None,
              uv: np.ndarray | None = None, texture_jpeg: bytes | None = None) -> bytes:
    """One triangle mesh as a USDZ file (see :func:`mesh_usda`), with the JPEG image
    ``texture_jpeg`` (stored in the package as given: no second encoding) mapped by ``uv``
    (N, 2, v up) when both are given."""
    if uv is None or texture_jpeg is None:
        return usdz_package({"face.usda": mesh_usda(vertices, faces, normals).encode()})
    layer = mesh_usda(vertices, faces, normals, uv, "texture.jpg").encode()
    return usdz_package({"face.usda": layer, "texture.jpg": texture_jpeg})
