"""MPLMM as its authors' code runs it (model ``mplmm_authors``).

Z. Guo, T. Jin, Z. Zhao. "Multimodal Prompt Learning with Missing Modalities for Sentiment Analysis and Emotion
Recognition". ACL 2024. Our own code for what zrguo/MPLMM does at its HEAD (commit c6f8d18; the model is that of
91f802e), written from reading it: the MulT backbone with MPLMM's three kinds of prompts, in two stages.
``models/promma.py`` holds our MPLMM-STYLE baseline (model ``mplmm``), a cousin with our masks, pooling and
initialisation; this file is the reference for "what the authors ran". Facts are marked **MPLMM**, departures **ours**.

Backbone (MulT, **MPLMM**)
  - Each modality is projected by a bias-free 1x1 convolution to width d (a Linear here: the same map and init).
  - The text features get embedding dropout before anything else, and every encoder applies it to its inputs.
  - An encoder scales its input by sqrt(d), adds fixed sinusoidal positions (position 0, a zero vector, wherever
    the input's first channel is exactly 0, as fairseq's ``make_positions`` with padding index 0 does), then runs
    pre-norm layers (LayerNorm -> attention -> dropout -> residual; LayerNorm -> Linear 4d -> ReLU -> Linear ->
    residual) and ends with a LayerNorm. Attention: joint q/k/v projection with bias, scaled dot product; in a
    crossmodal layer the same LayerNorm normalises query, key and value.
  - Attention is "causal" (``--attn_mask`` is on by default): query i sees keys j <= i + |Lk - Lq|. No padding
    masks: padded and dropped frames are attended.
  - Six crossmodal encoders (l<-a, l<-v, a<-l, a<-v, v<-l, v<-a; ``layers`` each), three memory encoders of width
    2d (max(layers, 3) layers), the LAST position of each, concatenated (6d), a residual block
    (Linear, ReLU, dropout, Linear, + input) and a Linear head. Loss: L1 (``criterion_dict.get(dataset, "L1Loss")``).

Prompts (adapt stage, **MPLMM**)
  - Generative prompts G_t (d x L_p): a missing modality t is generated from the present ones as
    GELU(TimeMap([G_t; GELU(W_{s->t} x_s) for each present source s])) along time, one time map per
    (target, set of present sources), plus t's "missing" signal prompt (d x L_t).
  - A present modality gets its "present" signal prompt added to its projection.
  - Missing-type prompts (3 x L_p x d) times mix(mode) = sum_m S_m^{state} F_m (d x 2d) are appended to each
    memory encoder's input, so the last position read by the head is the last missing-type prompt token.
  - At HEAD every prompt and factor starts at ZERO (``prompt_init="zeros"``). The missing-type prompts and their
    factors F_m then receive no gradient (each is multiplied by the other, which is zero) and stay zero: the head
    reads a zero token plus its position. The first release (35bd1a2) drew them from U(0, 1) (``"uniform"``).

Stages (**MPLMM**)
  - "pretrain": the backbone without prompts on complete data (the authors pretrain on complete CMU-MOSEI; on the
    embedded data **ours** pretrains on the complete embedded training split).
  - "adapt": the projections and the head are re-initialised, the encoders and the residual block are frozen, and
    the projections, head and prompts train under protocol B (eta 0.7, ``--drop_rate 0.7`` in the README).

**Ours**: batched (MPLMM loops over the samples of a batch in Python); the missing modes come from our protocol B
(MPLMM draws them per item with Python's ``random``); the re-initialisation of the adapt stage is seeded by the
run's seed; the text features are the pickle's (MPLMM reads the same ``text`` array).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.mmsa import Batch, DataSpec
from ..missing import derive_seed
from .common import ModelOutput, Stage

# crossmodal streams per target, in MulT's order: target t attends to sources s1, s2 (the other two, l-a-v order)
SOURCES = ((1, 2), (0, 2), (0, 1))
NAMES = ("l", "a", "v")


@dataclass
class MPLMMAuthorsConfig:
    dim: int = 30  # proj_dim = prompt_dim (MPLMM requires them equal)
    heads: int = 5
    layers: int = 5  # crossmodal encoders; memory encoders have max(layers, 3)
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    out_dropout: float = 0.1
    embed_dropout: float = 0.25
    causal: bool = True  # MPLMM's --attn_mask (on by default)
    prompt_len: int = 16
    prompt_init: str = "zeros"  # "zeros" (HEAD) or "uniform" (U(0, 1), the first release)
    loss: str = "l1"  # "l1" (MPLMM) or "mse"
    pretrain_epochs: int | None = None  # None: the run's train.epochs
    pretrain_lr: float | None = None
    adapt_epochs: int | None = None
    adapt_lr: float | None = None
    adapt_eta: float = 0.7


def sinusoidal(n: int, d: int, device=None) -> torch.Tensor:
    """fairseq's sinusoidal table (n, d): sines then cosines, row 0 (the padding index) zero."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float, device=device) * -(math.log(10000) / (half - 1)))
    ang = torch.arange(n, dtype=torch.float, device=device)[:, None] * freq[None]
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
    if d % 2:
        emb = torch.cat([emb, emb.new_zeros(n, 1)], 1)
    emb[0] = 0
    return emb


def causal_mask(lq: int, lk: int, device=None) -> torch.Tensor:
    """MulT's future mask (lq, lk): -inf where key j > i + |lk - lq|, else 0."""
    return torch.triu(torch.full((lq, lk), float("-inf"), device=device), 1 + abs(lk - lq))


def xavier_linear(i: int, o: int) -> nn.Linear:
    m = nn.Linear(i, o)
    nn.init.xavier_uniform_(m.weight)
    nn.init.zeros_(m.bias)
    return m


class EncoderLayer(nn.Module):
    def __init__(self, d: int, cfg: MPLMMAuthorsConfig):
        super().__init__()
        self.heads, self.cfg = cfg.heads, cfg
        self.in_proj = nn.Linear(d, 3 * d)  # MulT: one (3d, d) weight with bias, xavier-uniform, zero bias
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.norm_attn, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = xavier_linear(d, 4 * d), xavier_linear(4 * d, d)

    def attend(self, q, k, v):
        # q: (B, Lq, d); k, v: (B, Lk, d) -> (B, Lq, d)
        B, Lq, d = q.shape
        w, b = self.in_proj.weight.chunk(3), self.in_proj.bias.chunk(3)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  (B, H, L, d/H)
        q, k, v = (split(F.linear(x, wi, bi)) for x, wi, bi in zip((q, k, v), w, b))
        mask = causal_mask(Lq, k.shape[2], q.device) if self.cfg.causal else None
        p = self.cfg.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, Lq, d/H)
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, d))

    def forward(self, x, k=None, v=None):
        # x: (B, Lq, d); k, v: (B, Lk, d) or None (self-attention)
        h = self.norm_attn(x)
        k, v = (h, h) if k is None else (self.norm_attn(k), self.norm_attn(v))
        x = x + F.dropout(self.attend(h, k, v), self.cfg.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norm_ff(x))), self.cfg.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.cfg.res_dropout, self.training)


class Encoder(nn.Module):
    """MulT's TransformerEncoder: scaled input + sinusoidal positions + dropout, pre-norm layers, final LayerNorm."""

    def __init__(self, d: int, depth: int, cfg: MPLMMAuthorsConfig):
        super().__init__()
        self.d, self.p = d, cfg.embed_dropout
        self.layers = nn.ModuleList(EncoderLayer(d, cfg) for _ in range(depth))
        self.norm = nn.LayerNorm(d)

    def embed(self, x):
        # x: (B, L, d); position 1..L, or 0 (a zero vector) where the first channel is exactly 0
        L = x.shape[1]
        pos = torch.arange(1, L + 1, device=x.device).expand(x.shape[0], L)
        pos = torch.where(x[..., 0] != 0, pos, torch.zeros_like(pos))
        return F.dropout(math.sqrt(self.d) * x + sinusoidal(L + 1, self.d, x.device)[pos], self.p, self.training)

    def forward(self, x, ctx=None):
        # x: (B, Lq, d); ctx: (B, Lk, d) or None -> (B, Lq, d)
        x = self.embed(x)
        k, v = (None, None) if ctx is None else (self.embed(ctx), self.embed(ctx))  # two dropout draws, as MulT
        for layer in self.layers:
            x = layer(x, k, v)
        return self.norm(x)


class MPLMMAuthors(nn.Module):
    """MPLMM's MulT backbone and prompts; ``prompting`` (a buffer, saved with the weights) is off in the
    pretrain stage and on in the adapt stage."""

    def __init__(self, cfg: MPLMMAuthorsConfig, spec: DataSpec):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"mplmm_authors: dim {cfg.dim} must be divisible by heads {cfg.heads}")
        if cfg.prompt_init not in ("zeros", "uniform") or cfg.loss not in ("l1", "mse"):
            raise ValueError(f"mplmm_authors: prompt_init {cfg.prompt_init!r} (zeros|uniform), loss {cfg.loss!r} (l1|mse)")
        self.cfg, self.spec = cfg, spec
        d, P = cfg.dim, cfg.prompt_len
        self.lens = (spec.text_len, spec.audio_len, spec.vision_len)
        dims = (spec.text_dim, spec.audio_dim, spec.vision_dim)
        self.register_buffer("prompting", torch.tensor(False))
        # backbone
        self.proj = nn.ModuleList(nn.Linear(dims[m], d, bias=False) for m in range(3))
        self.cross = nn.ModuleList(Encoder(d, cfg.layers, cfg) for _ in range(6))  # l<-a, l<-v, a<-l, a<-v, v<-l, v<-a
        self.mem = nn.ModuleList(Encoder(2 * d, max(cfg.layers, 3), cfg) for _ in range(3))
        self.proj1, self.proj2 = nn.Linear(6 * d, 6 * d), nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, 1)
        # prompts
        init = torch.zeros if cfg.prompt_init == "zeros" else torch.rand
        self.generative = nn.Parameter(init(3, d, P))  # G_t: (d, L_p) per target modality
        self.to_prompt = nn.ModuleList(nn.Linear(dims[s], d) for t in range(3) for s in SOURCES[t])  # s -> t features
        # time maps per target: [both sources, first source only, second source only], Linear over the time axis
        self.time_map = nn.ModuleList(
            nn.Linear(P + sum(self.lens[s] for s in srcs), self.lens[t])
            for t in range(3) for srcs in (SOURCES[t], SOURCES[t][:1], SOURCES[t][1:]))
        self.signal_missing = nn.ParameterList(nn.Parameter(init(d, L)) for L in self.lens)
        self.signal_present = nn.ParameterList(nn.Parameter(init(d, L)) for L in self.lens)
        self.type_prompt = nn.Parameter(init(3, P, d))
        self.type_factor = nn.ParameterList(nn.Parameter(init(L, 2 * d)) for L in self.lens)

    # -- stages ---------------------------------------------------------------------------------------------

    def prompt_parameters(self):
        return [p for n, p in self.named_parameters() if n.split(".")[0] in PROMPT_PARTS]

    def start_pretrain(self) -> None:
        self.prompting.fill_(False)
        for p in self.parameters():
            p.requires_grad_(True)
        for p in self.prompt_parameters():
            p.requires_grad_(False)

    def start_adapt(self, seed: int) -> None:
        """Fresh projections and head (seeded), encoders and residual block frozen, prompts trainable."""
        self.prompting.fill_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed("mplmm-adapt", seed))
            for m in (*self.proj, self.out):
                m.reset_parameters()
        for n, p in self.named_parameters():
            p.requires_grad_(n.split(".")[0] in ("proj", "out", *PROMPT_PARTS))

    def stages(self, train_cfg) -> list[Stage]:
        c = self.cfg
        pre = {"protocol": "B", "train_level": 0.0, "select_level": 0.0}
        adapt = {"protocol": "B", "train_level": c.adapt_eta if train_cfg.train_level is None else train_cfg.train_level}
        for over, ep, lr in ((pre, c.pretrain_epochs, c.pretrain_lr), (adapt, c.adapt_epochs, c.adapt_lr)):
            if ep is not None:
                over["epochs"] = ep
            if lr is not None:
                over["lr"] = lr
        seed = train_cfg.seed
        return [Stage("pretrain", pre, MPLMMAuthors.start_pretrain), Stage("adapt", adapt, lambda m: m.start_adapt(seed))]

    # -- forward --------------------------------------------------------------------------------------------

    def generate(self, raw, present):
        """Inputs of the crossmodal encoders with prompts: (B, L_m, d) per modality."""
        B = raw[0].shape[0]
        out = []
        for t in range(3):
            own = self.proj[t](raw[t]) + self.signal_present[t].T  # (B, L_t, d)
            feats = {s: F.gelu(self.to_prompt[2 * t + j](raw[s])) for j, s in enumerate(SOURCES[t])}  # (B, L_s, d)
            g = self.generative[t].T.expand(B, -1, -1)  # (B, L_p, d)
            s1, s2 = SOURCES[t]
            gens = [F.gelu(self.time_map[3 * t + k](torch.cat([g, *(feats[s] for s in srcs)], 1).transpose(1, 2)))
                    .transpose(1, 2) for k, srcs in enumerate(((s1, s2), (s1,), (s2,)))]  # 3 x (B, L_t, d)
            gen = torch.where(present[:, s2, None, None], torch.where(present[:, s1, None, None], gens[0], gens[2]), gens[1])
            out.append(torch.where(present[:, t, None, None], own, gen + self.signal_missing[t].T))
        return out

    def type_prompts(self, present):
        # mix(mode) = sum_m S_m^{state} F_m: (B, d, 2d); prompts (3, L_p, d) @ mix -> (B, 3, L_p, 2d)
        mix = sum(torch.where(present[:, m, None, None], (self.signal_present[m] @ self.type_factor[m])[None],
                              (self.signal_missing[m] @ self.type_factor[m])[None]) for m in range(3))
        return self.type_prompt[None] @ mix[:, None]

    def forward(self, batch: Batch) -> ModelOutput:
        text = F.dropout(batch.text_feat, self.cfg.embed_dropout, self.training)  # (B, Lt, Dt), as MPLMM
        raw = (text, batch.audio, batch.vision)
        B = len(batch)
        present = batch.present if batch.present is not None else torch.ones(B, 3, dtype=torch.bool, device=text.device)
        prompting = bool(self.prompting)
        h = self.generate(raw, present) if prompting else [self.proj[m](raw[m]) for m in range(3)]  # (B, L_m, d)
        types = self.type_prompts(present) if prompting else None
        last = []
        for t in range(3):
            s1, s2 = SOURCES[t]
            x = torch.cat([self.cross[2 * t](h[t], h[s1]), self.cross[2 * t + 1](h[t], h[s2])], -1)  # (B, L_t, 2d)
            if prompting:
                x = torch.cat([x, types[:, t]], 1)  # (B, L_t + L_p, 2d)
            last.append(self.mem[t](x)[:, -1])  # (B, 2d): the last position
        z = torch.cat(last, -1)  # (B, 6d)
        z = z + self.proj2(F.dropout(F.relu(self.proj1(z)), self.cfg.out_dropout, self.training))
        pred = self.out(z).squeeze(-1)  # (B,)
        loss = F.l1_loss if self.cfg.loss == "l1" else F.mse_loss
        return ModelOutput(pred, {"sentiment": loss(pred.float(), batch.labels.float())})


PROMPT_PARTS = ("generative", "to_prompt", "time_map", "signal_missing", "signal_present", "type_prompt", "type_factor")

__all__ = ["MPLMMAuthors", "MPLMMAuthorsConfig", "causal_mask", "sinusoidal"]
