"""Camera geometry: WCPA conventions, intrinsics, the JMLR crop, PnP, rotations, metrics.

See ``docs/design.md`` for the conventions (row-vector ``R_t``, OpenGL vs OpenCV
cameras, pixel centres, crop transform ``M``). Numpy and OpenCV only: importing this
package never imports torch (the torch versions are in ``jmlr.geometry.torch_ops``).
"""

from jmlr.geometry.camera import (
    OPENGL_TO_OPENCV,
    WCPA_IMAGE_SIZE,
    WCPA_PROJECTION_MATRIX,
    crop_intrinsics,
    intrinsics_from_focal_35mm,
    intrinsics_from_fov,
    intrinsics_from_projection,
    make_intrinsics,
    opencv_to_rt,
    project_points,
    projection_from_intrinsics,
    rescale_intrinsics,
    rt_from_rotation_translation,
    rt_to_opencv,
    transform_points,
    wcpa_intrinsics,
    world_to_opencv,
)
from jmlr.geometry.crop import (
    ARCFACE_TEMPLATE_112,
    apply_affine,
    crop_transform,
    estimate_similarity,
    invert_affine,
    jitter_similarity,
    jmlr_template,
    landmarks5_from_68,
    warp_crop,
)
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.metrics import challenge_score, pose_metrics, vertex_errors
from jmlr.geometry.pnp import PnPResult, solve_pnp, solve_pnp_batch
from jmlr.geometry.rotation import (
    euler_to_matrix,
    geodesic_angle_deg,
    head_pose_euler,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotvec,
    pose_matrix,
    quaternion_to_matrix,
    rotvec_to_matrix,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "OPENGL_TO_OPENCV",
    "WCPA_IMAGE_SIZE",
    "WCPA_PROJECTION_MATRIX",
    "Intrinsics",
    "PnPResult",
    "apply_affine",
    "challenge_score",
    "crop_intrinsics",
    "crop_transform",
    "estimate_similarity",
    "euler_to_matrix",
    "geodesic_angle_deg",
    "head_pose_euler",
    "intrinsics_from_focal_35mm",
    "intrinsics_from_fov",
    "intrinsics_from_projection",
    "invert_affine",
    "jitter_similarity",
    "jmlr_template",
    "landmarks5_from_68",
    "make_intrinsics",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_rotvec",
    "opencv_to_rt",
    "pose_matrix",
    "pose_metrics",
    "project_points",
    "projection_from_intrinsics",
    "quaternion_to_matrix",
    "rescale_intrinsics",
    "rotvec_to_matrix",
    "rt_from_rotation_translation",
    "rt_to_opencv",
    "solve_pnp",
    "solve_pnp_batch",
    "transform_points",
    "vertex_errors",
    "wcpa_intrinsics",
    "warp_crop",
    "world_to_opencv",
]
