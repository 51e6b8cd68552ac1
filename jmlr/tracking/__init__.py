"""Video: faces followed from frame to frame and their pose and mesh smoothed.

`one_euro`: the One Euro filter (pure steps on vectors and rotations); `tracker`:
`FaceTracker`, one video's state and the decisions taken per frame (crop from the last
frame's points or detect, lost or not, smoothing). No service dependency: the service
keeps a `TrackingState` per session (service/sessions.py).
"""

from .one_euro import (
    OneEuroFilter,
    OneEuroParams,
    one_euro_rotation,
    one_euro_step,
    one_euro_vector,
    smoothing_factor,
)
from .tracker import FaceTracker, Track, TrackingParams, TrackingState, running_log_size

__all__ = [
    "OneEuroFilter",
    "OneEuroParams",
    "one_euro_rotation",
    "one_euro_step",
    "one_euro_vector",
    "smoothing_factor",
    "FaceTracker",
    "Track",
    "TrackingParams",
    "TrackingState",
    "running_log_size",
]
