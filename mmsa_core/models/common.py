"""What every model returns, so that one trainer serves them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class ModelOutput:
    pred: torch.Tensor  # (B,) sentiment prediction
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # weighted loss terms; the trainer sums them
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # introspection for the book (detached)


def fp32_head(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(x)`` in fp32, also under autocast: predictions keep fp32 resolution (bf16 has steps of 0.0156 for
    |y| >= 2), so a mixed-precision run can be compared with an fp32 one at a stated tolerance. A no-op in fp32."""
    with torch.autocast(x.device.type, enabled=False):
        return head(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)  # fp64 stays fp64


def sentiment_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred.float(), labels.float())


@dataclass
class Stage:
    """One training stage. A model with several (ProMMA: pretrain on complete data, then adapt prompts) defines
    ``stages(train_cfg) -> list[Stage]``; a model without that method trains in one stage."""

    name: str
    train_overrides: dict = field(default_factory=dict)  # TrainConfig fields to change for this stage
    prepare: Callable | None = None  # called with the model before the stage trains (freeze, copy a teacher...)
