"""The model store: self-describing, hash-checked folders of trained networks.

See ``jmlr.store.manifest`` for the format. ``load_model`` never unpickles anything.
"""

from .average import average_models, average_state_dicts
from .export import export_checkpoint, export_model, make_random_model, set_default_model
from .load import (
    CropPrediction,
    LoadedModel,
    average_flipped,
    crop_batch,
    default_model_name,
    list_models,
    load_model,
    load_topology,
    unflip_predictions,
)
from .manifest import ModelStoreError, head_thresholds, read_manifest, write_head_thresholds

__all__ = [
    "ModelStoreError", "LoadedModel", "load_model", "list_models", "default_model_name",
    "export_model", "export_checkpoint", "make_random_model", "set_default_model",
    "average_models", "average_state_dicts",
    "read_manifest", "head_thresholds", "write_head_thresholds",
    "load_topology", "unflip_predictions", "crop_batch", "CropPrediction", "average_flipped",
]
