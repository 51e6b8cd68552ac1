"""Networks: backbone families (ResNet-D, MobileNetV2), the JMLR head, the paper's
baselines, their losses, the architecture registry (`registry`: one YAML file per
architecture, one entry per backbone family) and the task registry (`tasks`: what each
kind of network predicts and how it learns it).
"""

from .jmlr_net import (
    OUTPUTS_PER_VERTEX,
    VERTEX_SCALE,
    JMLRHead,
    JMLRNet,
    decode_output,
    encode_targets,
    split_expression,
)
from .registry import FAMILIES, create_backbone, create_model, list_models, load_model_config, register_family
from .resnet import BasicBlock, Bottleneck, ResNet
from .tasks import TASKS, Task, TaskOutput, create_task_model, get_task, register_task

__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "JMLRHead", "JMLRNet",
    "VERTEX_SCALE", "OUTPUTS_PER_VERTEX", "decode_output", "encode_targets", "split_expression",
    "create_model", "create_backbone", "list_models", "load_model_config", "FAMILIES", "register_family",
    "TASKS", "Task", "TaskOutput", "get_task", "register_task", "create_task_model",
    "count_parameters", "count_flops",
]


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module, input_size: int, batch: int = 1) -> int:
    """FLOPs of one forward pass at ``(batch, 3, S, S)``, counting a multiply-add as 2.

    Uses ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; BN,
    ReLU and pooling are not counted, as is customary).
    """
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # On the meta device nothing is computed: only shapes flow, which is all the
    # counter needs, so even ResNet-50 at 256 px counts instantly.
    meta = copy.deepcopy(module).to("meta").eval()
    x = torch.zeros(batch, 3, input_size, input_size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(x)
    return int(counter.get_total_flops())
