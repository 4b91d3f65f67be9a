"""What every model returns, so that one trainer serves them all."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    pred: torch.Tensor  # (B,) sentiment prediction
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # weighted loss terms; the trainer sums them
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # introspection for the book (detached)


def sentiment_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred.float(), labels.float())
