"""The simple baseline: late fusion of per-modality Transformer encoders.

Each modality is projected to width ``dim``, encoded by a small pre-norm Transformer over its valid, kept
positions, mean-pooled over them, and the three pooled vectors with the three presence flags feed an MLP that
predicts the sentiment score. A dropped frame is zero and masked out, so it cannot leak; a modality that is
missing altogether pools to zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.mmsa import Batch, DataSpec
from .common import ModelOutput, fp32_head, sentiment_loss
from .layers import Transformer, masked_mean
from .text import TextEncoder, TextEncoderConfig


@dataclass
class BaselineConfig:
    dim: int = 64
    depth: int = 1
    heads: int = 4
    dim_head: int = 16
    dropout: float = 0.1
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)


class LateFusionBaseline(nn.Module):
    def __init__(self, cfg: BaselineConfig, spec: DataSpec):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.text_encoder = TextEncoder(cfg.text, spec.text_dim)
        d = cfg.dim
        self.proj = nn.ModuleDict({
            "text": nn.Linear(self.text_encoder.out_dim, d),
            "audio": nn.Linear(spec.audio_dim, d),
            "vision": nn.Linear(spec.vision_dim, d),
        })
        lens = {"text": spec.text_len, "audio": spec.audio_len, "vision": spec.vision_len}
        self.pos = nn.ParameterDict({m: nn.Parameter(torch.randn(1, L, d) * 0.02) for m, L in lens.items()})
        self.enc = nn.ModuleDict({m: Transformer(d, cfg.depth, cfg.heads, cfg.dim_head, 2 * d, cfg.dropout) for m in lens})
        self.head = nn.Sequential(nn.Linear(3 * d + 3, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, 1))

    def forward(self, batch: Batch) -> ModelOutput:
        B = len(batch)
        present = batch.present if batch.present is not None else batch.labels.new_ones(B, 3, dtype=torch.bool)
        text = self.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment, batch.text_feat)  # (B, Lt, Ht)
        text_mask = batch.text_mask.bool() & present[:, :1]  # a missing text modality is masked out whole
        inputs = {"text": (text, text_mask), "audio": (batch.audio, batch.audio_mask), "vision": (batch.vision, batch.vision_mask)}
        pooled = []
        for m, (x, mask) in inputs.items():
            h = self.proj[m](x) + self.pos[m][:, : x.shape[1]]  # (B, L, d)
            h = self.enc[m](h, mask | ~mask.any(1, keepdim=True))  # an all-masked row attends everywhere, then pools to 0
            pooled.append(masked_mean(h, mask))  # (B, d)
        z = torch.cat(pooled + [present.to(pooled[0].dtype)], -1)  # (B, 3d + 3)
        pred = fp32_head(self.head, z).squeeze(-1)  # (B,) fp32 also under autocast
        return ModelOutput(pred, {"sentiment": sentiment_loss(pred, batch.labels)})
