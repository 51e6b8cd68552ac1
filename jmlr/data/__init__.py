"""Training data: alignment with the 68 landmarks, augmentation, datasets and loaders."""

from .align import AlignJitter, align_sample, alignment_from_landmarks68, crop_points, masked_full_image
from .augment import color_jitter, flip_batch, flip_sample

__all__ = [
    "AlignJitter", "align_sample", "alignment_from_landmarks68", "crop_points", "masked_full_image",
    "color_jitter", "flip_batch", "flip_sample",
]
