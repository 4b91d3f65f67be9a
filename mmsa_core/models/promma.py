"""ProMMA, prompt-based missing-modality adaptation ("evaluation before generation"), and its MPLMM-style baseline.

Papers
------
- **ProMMA**: R. Chen, T. Zhang, X. Shen, W. Zhang. "Evaluation Before Generation: A Paradigm for Robust Multimodal
  Sentiment Analysis with Missing Modalities". ICME 2026, arXiv:2604.05558. The authors' repository holds no code,
  so this file is the first public implementation we know of.
- **MPLMM**: Z. Guo, T. Jin, Z. Zhao. "Multimodal Prompt Learning with Missing Modalities for Sentiment Analysis and
  Emotion Recognition". ACL 2024. This is the parent method, and its public code is where the backbone and the prompts
  come from.

Labels: **paper** marks the ProMMA paper's words, **MPLMM** marks a fact of MPLMM's public code, and **ours** marks a
design choice made here: it fills a gap the paper leaves open, or it departs from MPLMM. Each choice takes one
sentence.

Backbone (MulT-style, **MPLMM**)
  - **MPLMM**: per-modality bias-free 1x1 projection to width d, six crossmodal encoders (l<-a, l<-v, a<-l, a<-v,
    v<-l, v<-a), three memory encoders of width 2d over the two concatenated crossmodal streams, concatenation (6d),
    a residual MLP block and a linear head.
  - **ours**: we use the pre-norm blocks of ``layers.py`` (LayerNorm on q, k and v, then SDPA), plus a final
    LayerNorm after each encoder. MulT uses post-norm blocks.
  - **ours**: fixed sinusoidal positions are added once to each projected sequence, as in MulT. MulT re-adds them
    inside every encoder and scales by sqrt(d).
  - **ours**: every attention has key masks, so padded, dropped or missing positions are never attended. MulT
    masks nothing and uses causal masks.
  - **ours**: each memory encoder is pooled by a masked mean over its own valid positions (``pool="mean"``).
    ``pool="last"`` takes the last valid step instead. Prompt slots are never pooled. MPLMM takes the last step,
    which is its last missing-type prompt token.
  - **ours**: each attention head is at least 8 wide and a multiple of 8 (``head_width``), so that the fused SDPA
    kernels run in half precision; with MPLMM's d = 30 and 5 heads that is 8 (memory encoders: 16) instead of 6
    (12). The model widths stay MPLMM's.
  - **ours**: the forward pass reads no tensor value on the host (no ``.any()``, ``nonzero()``, boolean-mask
    indexing or ``bool(buffer)``): masked sums replace selections, so a GPU step never waits for the device.
  - **ours**: protocol A drops text tokens by writing [UNK] with zero features. Such a token is masked like a
    dropped frame, so a genuine [UNK] in the source text is masked too.
  - **ours**: a present modality with no valid position at all is treated as missing.
  - **ours**: prompts and modules are drawn from a forked RNG. One seed then gives ProMMA, the baseline and every
    ablation the same backbone init and the same stage-1 training, so comparisons differ only in stage 2.

MPLMM prompts (**MPLMM**, all used in the adapt stage)
  - **MPLMM**: generative prompts G_m (length L_p) are combined with small projections (Linear + GELU) of the
    available modalities' raw features and mapped along time to the missing modality's length.
  - **ours**: the mapping is one learned time map per (source, target) pair, summed over the sources that are
    present, and shared by all missing modes. MPLMM has one map per combination over the concatenation. A Conv1d
    over a concatenation equals a sum of per-block maps, so the difference is only in which weights are shared.
  - **ours**: a d x d read-out follows MPLMM's GELU, so a stand-in can match projected features of either sign
    (the generation loss needs this).
  - **MPLMM**: missing-signal prompts, one "missing" and one "present" sequence (L_m x d) per modality, are added
    to the projected sequence.
  - **MPLMM**: missing-type prompts are (3, L_p, d) @ mix(mode). mix(mode) = sum_m S_m^{state}ᵀ M_m
    (d x 2d, S the signal prompts). They are appended to each memory encoder's input.
  - **ours**: the prompts start at a small normal initialisation. MPLMM starts them at U(0, 1).

Missing Modality Evaluator (MME)
  - **paper**: at the input stage, MME judges how important a missing modality is, using the pretrained model and
    pseudo labels, so that low-quality imputation is avoided.
  - **ours**: the evaluator is an MLP over (pooled present projected features, pooled generated stand-ins of the
    missing modalities, missing-mode one-hot) and gives s_m in (0, 1) for each modality and SAMPLE: it sees the
    stand-in it judges. Its inputs are detached, so the BCE loss trains only the evaluator.
  - **ours**: pseudo labels come from the FROZEN stage-1 backbone (the teacher), in the teacher's own input space,
    on three kinds of input. (1) The complete input. (2) Every missing modality absent: a zero sequence, which
    the teacher has learned on, since stage 1 trains under protocol B at ``pretrain_eta`` = 0.5. (3) Missing
    modality m replaced by its stand-in (the generated features, which the generation loss pulls towards the real
    projected ones) while the other missing modalities stay absent. So the teacher sees in training the inputs it
    judges: real, absent, and stand-ins of the real. The label is 1 when (3) is strictly closer to (1) than (2)
    is, else 0. The soft variant is sigmoid(error reduction / T). The five runs (complete, all absent, l, a, v
    stood in) go through the teacher as one batch of 5B.
  - **ours**: the stand-in is gated by s_m: hard (s_m >= 0.5) by default, or soft (multiply by s_m). The gate is
    detached, so only BCE trains the evaluator. ``mme_gate="always"`` / ``"never"`` override the evaluator (every
    stand-in used, as MPLMM; none used), to compare one trained model's decisions with both.
  - **ours**: training uses the evaluator's own gate, as at inference (``mme_train_gate="evaluator"``). Gating by
    the pseudo label (``"label"``, teacher forcing) is an option, but such labels are computed from the hidden
    modality, so that gate leaks it into training predictions. On the embedded default this measurably hurt
    validation MAE.
  - **ours**: if no frozen backbone has been snapshotted (the stages were not run), no pseudo labels are computed
    and training gates by the evaluator's own decision.

Modality-invariant Prompt Disentanglement (MPD)
  - **paper**: MPD decomposes shared prompts into modality-specific private prompts to capture local correlations.
  - **ours**: P_m = P_s + U_m V_mᵀ, where the shared P_s is (L_p, 2d) and the rank is r.
  - **ours**: the orthogonality loss sums, over the pairs (D_l, D_a), (D_l, D_v), (D_a, D_v), (D_m, P_s), the mean
    squared entry of the row-normalised token Gram matrix Â B̂ᵀ. This is the squared Frobenius norm / L_p², in the
    style of MISA's difference loss.
  - **ours**: P_m is prepended to modality m's memory-encoder input.

Dynamic Prompt Weighting (DPW)
  - **paper**: DPW computes mutual-information-based weights from the cross-attention outputs, to suppress
    interference from missing modalities.
  - **ours**: the MI is estimated on what the source ADDS: c_{t<-s}, the sum over the crossmodal layers of the
    cross-attention outputs (what the source wrote into the target's residual stream), pooled over the target's
    valid positions. The crossmodal output itself also holds the target through the residual, so an estimate on it
    could score a stream from the target alone.
  - **ours**: the MI is between c_{t<-s} and the REAL source z_s (its pooled projected features, layer-normed),
    estimated by Barber and Agakov's variational bound with a Gaussian decoder q(z_s | c) per stream
    (``SourceDecoder``), trained by its negative log-likelihood where the real source is known (training batches
    carry the complete input), on detached inputs (λ_mi weights that loss). The per-sample score is the
    information the decoder claims, -1/2 mean log sigma^2(c) nats per dimension: it needs no z_s at inference
    and does not depend on the rest of the batch. A stream whose source is missing carries only what its stand-in
    recovers of the real source, so its score falls with the stand-in's quality.
  - **ours**: the weights are a per-sample softmax over the two scores of a target (temperature τ = 0.25). They
    scale the two streams by 2w, so equal weights reproduce the unweighted backbone. The decoders' last layer
    starts at 0, so at init w = (1/2, 1/2) exactly. Their output is multiplied by a fixed 10
    (``dpw_decoder_scale``), which lets them learn within a short run.
  - **ours**, measured (chapter 5, ``mechanisms.json`` key ``dpw_decoders``): within the preset's six adapt epochs
    the decoders stop far short of convergence, so the weights barely react to a missing source; with
    ``dpw_decoder_scale=100`` they react (a missing source's weight drops by 0.16 and 0.09 on the two variants,
    against 0.035 and 0.013) but the model's MAE gets worse, so the preset keeps 10.
  - **ours**: ``dpw_task_gate=True`` adds to each score a linear function of the unit-length change, trained by the
    task loss through the weights (off by default: the weights are then the MI estimate alone).

Multi-level Prompt Dynamic Connection (MPDC)
  - **paper**: MPDC integrates shared prompts with the self-attention outputs through residual connections at
    multiple levels.
  - **ours**: in every layer l of each memory encoder (at least two in every preset), the self-attention output
    in the residual stream, x + SA(x), gets + g_{m,l} · LN(read(P_s)) at every position, before the layer's
    feed-forward block. read(P_s) is a parameter-free attention of each position over the L_p tokens of the
    shared prompt P_s (layer-normed queries, keys and values): the global prompt prior, as each position sees it.
    g is a learned gate per (memory encoder, layer), initialised to 0 so training starts from the plain model, and
    parametrised as 10 x a parameter (``mpdc_gate_scale``) so that it can move within a short run.

Training (two stages through :meth:`ProMMA.stages`)
  - **paper**: "pretrained models".
  - **ours**: stage 1, "pretrain", trains the plain backbone (no prompts, no modules) on the same dataset under
    protocol B at ``pretrain_eta`` (0.5 in the presets; 0 = complete data only, as MPLMM pretrains), selected at the
    same eta. A missing modality is a zero sequence with positions. Every variant, the MPLMM-style baseline
    included, shares this stage, so the ablation differs in stage 2 only.
  - **ours**: stage 2, "adapt", trains under protocol B (eta = 0.7), or under protocol A when the run's
    train.protocol is "A".
  - **MPLMM**: when adapting, the pretrained encoders and the residual block stay frozen, and only the input
    projections, the output layer and the prompts train.
  - **ours**: we keep that freezing and the stage-1 weights of the projections and head (MPLMM re-initialises them
    because it pretrains on another dataset). ``adapt_trainable`` changes which backbone parts train.
  - **ours** (our spec): Loss = MSE + λ_orth L_orth + λ_mme BCE + λ_mi NLL(DPW decoders) + λ_gen MSE(generated,
    real projected features). ``ModelOutput.losses`` holds the weighted terms.
  - **ours**: the generation MSE is computed only where the real modality is known (``batch.complete``): for
    missing modalities, over the complete input's valid positions, against the current projection (detached).
  - **ours**: the auxiliary losses are computed in training mode only. Under protocol A nothing is missing, so
    the adapt stage snapshots no teacher and computes no pseudo labels.
  - **MPLMM**: MPLMM has no generation loss, so the "mplmm" baseline sets λ_gen = 0.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..data.mmsa import Batch, DataSpec
from ..missing import MODES
from .common import ModelOutput, Stage, fp32_head, sentiment_loss
from .layers import TransformerLayer, masked_mean
from .text import TextEncoder, TextEncoderConfig

SHORT = ("l", "a", "v")  # text (language), audio, vision: index 0, 1, 2 everywhere below
# crossmodal streams (target, source), in MulT's order: l<-a, l<-v, a<-l, a<-v, v<-l, v<-a
PAIRS = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))
N_MODES = len(MODES)
# the backbone (stage 1); everything else is a prompt or a ProMMA module (stage 2)
BACKBONE = ("text_encoder", "proj", "cross", "mem", "fusion", "out")


@dataclass
class ProMMAConfig:
    # backbone
    # the defaults are the "default" preset, sized for the embedded dataset; see promma_preset for MOSI & co.
    dim: int = 16  # d: width of the projected sequences and crossmodal encoders; memory encoders use 2d
    heads: int = 2  # attention heads (d and 2d must be divisible by it)
    cross_depth: int = 1  # layers per crossmodal encoder
    mem_depth: int = 2  # layers per memory (self-attention) encoder: MPDC connects P_s at each of them
    mlp_ratio: int = 2  # feed-forward width = mlp_ratio x width
    dropout: float = 0.1  # attention and feed-forward dropout
    # attention-probability dropout alone (None: ``dropout``). 0 lets the CPU take the fused attention kernel, which
    # never materialises the (B, heads, L, L') weights; MPLMM drops attention weights, so the presets keep None.
    attn_dropout: float | None = None
    embed_dropout: float = 0.1  # on the encoder inputs
    out_dropout: float = 0.1  # in the residual MLP block
    pool: str = "mean"  # "mean" (masked mean over valid positions) or "last" (last valid step)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    # MPLMM prompts
    prompt_len: int = 4  # L_p: generative, missing-type and MPD prompt length
    # ProMMA's four modules (all False = the MPLMM-style baseline)
    use_mme: bool = True
    use_mpd: bool = True
    use_dpw: bool = True
    use_mpdc: bool = True
    # "hard" (stand-in iff s_m >= mme_threshold), "soft" (stand-in x s_m); "always" / "never" override the evaluator
    # (every stand-in used, as MPLMM; none used): the book's comparisons of one trained model's decisions
    mme_gate: str = "hard"
    mme_threshold: float = 0.5
    mme_soft_labels: bool = False  # pseudo labels sigmoid(error reduction / mme_temperature) instead of 0/1
    mme_temperature: float = 0.1  # in label units
    mme_hidden: int = 32
    mpd_rank: int = 2  # r of the private parts U_m V_mᵀ
    dpw_temperature: float = 0.25  # τ of the per-sample softmax over the two MI scores (nats per dimension)
    dpw_decoder_scale: float = 10.0  # fixed multiplier of the MI decoders' output (a short run must train them)
    dpw_task_gate: bool = False  # also add a task-trained score of the cross-attention change (see DPW)
    dpw_gate_scale: float = 10.0  # fixed scale of that score on the unit-length change
    mpdc_gate_scale: float = 10.0  # g = scale x raw parameter, so a gate moves within a short run (see MPDC)
    mme_train_gate: str = "evaluator"  # training gate: the evaluator's decision (as at inference) or "label"
    # loss weights (a term is computed only when its module is on and its weight is > 0)
    lambda_orth: float = 0.1
    lambda_mme: float = 0.1
    lambda_mi: float = 0.1
    lambda_gen: float = 0.1
    # the two stages (None = the run's TrainConfig value)
    # protocol-B eta of stage 1: the backbone, which is MME's teacher, also learns on absent modalities (zeros), so
    # that it has seen the inputs it judges; 0 = complete data only (MPLMM's pretraining)
    pretrain_eta: float = 0.5
    pretrain_epochs: int | None = None
    adapt_epochs: int | None = None
    pretrain_lr: float | None = None
    adapt_lr: float | None = None
    adapt_eta: float = 0.7  # protocol-B eta of the adapt stage when train.train_level is not set
    adapt_trainable: tuple[str, ...] = ("proj", "out")  # backbone parts that still train in the adapt stage


@dataclass
class MPLMMConfig(ProMMAConfig):
    """The MPLMM-style baseline: the same backbone and MPLMM's three prompt kinds, none of ProMMA's modules."""

    use_mme: bool = False
    use_mpd: bool = False
    use_dpw: bool = False
    use_mpdc: bool = False
    lambda_gen: float = 0.0  # MPLMM trains its generative prompts through the task loss only


# The real feature sizes of each preset's dataset (shared/spec/protocols.md), for reference and the benchmark.
PRESET_DATA = {
    "mosi": dict(text_len=50, text_dim=768, audio_len=375, audio_dim=5, vision_len=500, vision_dim=20),
    "mosei": dict(text_len=50, text_dim=768, audio_len=500, audio_dim=74, vision_len=500, vision_dim=35),
    "sims": dict(text_len=39, text_dim=768, audio_len=400, audio_dim=33, vision_len=55, vision_dim=709),
    "default": dict(text_len=24, text_dim=128, audio_len=32, audio_dim=5, vision_len=32, vision_dim=20),
}


def promma_preset(name: str, baseline: bool = False) -> ProMMAConfig:
    """Model sizes per dataset.

    For "mosi", "mosei" and "sims" these are MPLMM's: d = 30, 5 heads, 5 crossmodal layers, L_p = 16, and
    dropouts of 0.1 plus 0.25 on the embeddings. MPLMM's memory encoders are built with ``max(layers, 3)``
    layers, i.e. 5 at its defaults, so we use 5. Its attention dropout and relu dropout map onto our single block
    dropout. "default" is sized for the embedded dataset. ``baseline=True`` gives the MPLMM-style config.
    """
    cls = MPLMMConfig if baseline else ProMMAConfig
    if name in ("mosi", "mosei", "sims"):
        return cls(dim=30, heads=5, cross_depth=5, mem_depth=5, mlp_ratio=4, dropout=0.1, embed_dropout=0.25,
                   out_dropout=0.1, prompt_len=16, mme_hidden=60, mpd_rank=4)
    if name == "default":
        return cls()
    raise ValueError(f"unknown ProMMA preset {name!r}; expected 'mosi', 'mosei', 'sims' or 'default'")


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sinusoidal positions (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe.float()


def mme_targets(y_full, y_gen, y_abs, soft: bool = False, temperature: float = 0.1) -> torch.Tensor:
    """MME pseudo labels from the frozen backbone's three predictions: 1 where the generated stand-in brings the
    prediction closer to the complete-input prediction than leaving the modality absent, by more than a tie
    (1e-6 label units: identical inputs in different rows of one batch may differ in the last bits), else 0; the
    soft variant is sigmoid(error reduction / temperature)."""
    gain = (y_abs - y_full).abs() - (y_gen - y_full).abs()  # error reduction by the stand-in
    return torch.sigmoid(gain / temperature) if soft else (gain > 1e-6).to(y_full.dtype)


def head_width(width: int, heads: int) -> int:
    """Per-head width: width / heads rounded up to a multiple of 8, the smallest the fused (flash and
    memory-efficient) SDPA kernels take in half precision. MPLMM's d = 30 with 5 heads gives 6 (8 here), and 12 for
    its memory encoders (16 here); the model widths stay MPLMM's, only the inner attention width grows."""
    return -(-width // heads // 8) * 8 if width % (heads * 8) else width // heads


class CrossmodalEncoder(nn.Module):
    """Target attends to source at every layer (MulT); the source is not updated. Also returns the sum of the
    cross-attention outputs over the layers: what the source wrote into the target's residual stream (DPW)."""

    def __init__(self, dim, depth, heads, mlp_dim, dropout, attn_dropout=None):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, head_width(dim, heads), mlp_dim, dropout, attn_dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, ctx, ctx_mask):
        # x: (B, Lt, d) target; ctx: (B, Ls, d) source; ctx_mask: (B, Ls) bool, at least one True per row
        change = torch.zeros_like(x)
        for layer in self.layers:  # TransformerLayer.forward, written out to keep the attention output
            a = layer.attn(x, ctx, ctx, ctx_mask)  # (B, Lt, d)
            change = change + a
            x = x + a
            x = x + layer.ff(x)
        return self.norm(x), change  # (B, Lt, d) each


def prompt_read(x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """MPDC's read-out of the global prompt prior: every position of ``x`` (B, T, E) attends to the L_p tokens of
    ``prior`` (L_p, E), without parameters (layer-normed queries, keys and values), and the read-out is layer-normed
    too, so that a gate g adds g times a unit-scale vector whatever the size of P_s -> (B, T, E)."""
    E = x.shape[-1]
    kv = F.layer_norm(prior, (E,))[None].expand(x.shape[0], -1, -1)  # (B, L_p, E)
    return F.layer_norm(F.scaled_dot_product_attention(F.layer_norm(x, (E,)), kv, kv), (E,))  # (B, T, E)


class MemoryEncoder(nn.Module):
    """Self-attention encoder. With ``prior`` and ``gates`` (MPDC), the self-attention output of layer l gets the
    residual + gates[l] * prompt_read(., prior) at every position before the layer's feed-forward block."""

    def __init__(self, dim, depth, heads, mlp_dim, dropout, attn_dropout=None):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, head_width(dim, heads), mlp_dim, dropout, attn_dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask, prior=None, gates=None):
        # x: (B, T, E); mask: (B, T) bool; prior: (L_p, E) the shared prompt P_s; gates: (depth,)
        for i, layer in enumerate(self.layers):  # TransformerLayer.forward, written out for the MPDC residual
            x = x + layer.attn(x, x, x, mask)  # the self-attention output, in the residual stream
            if prior is not None:
                x = x + gates[i] * prompt_read(x, prior)  # MPDC at level l
            x = x + layer.ff(x)
        return self.norm(x)  # (B, T, E)


class PromptGenerator(nn.Module):
    """MPLMM's generative prompts: a stand-in (B, L_m, d) for each modality m from the OTHER modalities that are
    present. gen_m = Linear(GELU(T_p G_m + sum_s T_sm f_sm(x_s) + b_m)), f_sm = GELU(Linear(raw x_s)), T = time maps."""

    def __init__(self, dim, lens, in_dims, prompt_len):
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(3, prompt_len, dim) * 0.02)  # G: (3, L_p, d)
        self.feat = nn.ModuleDict({f"{SHORT[s]}2{SHORT[t]}": nn.Sequential(nn.Linear(in_dims[s], dim), nn.GELU())
                                   for t, s in PAIRS})
        self.time = nn.ParameterDict()
        self.time_prompt = nn.ParameterList()
        self.bias = nn.ParameterList()
        for t in range(3):
            fan_in = prompt_len + sum(lens[s] for s in range(3) if s != t)  # as one Conv1d over the concatenation
            bound = 1.0 / math.sqrt(fan_in)
            u = lambda *shape: nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))  # noqa: E731
            self.time_prompt.append(u(lens[t], prompt_len))  # (L_t, L_p)
            for s in range(3):
                if s != t:
                    self.time[f"{SHORT[s]}2{SHORT[t]}"] = u(lens[t], lens[s])  # (L_t, L_s)
            self.bias.append(u(lens[t], 1))  # (L_t, 1)
        self.readout = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))

    def forward(self, raw, masks, present):
        # raw[s]: (B, L_s, D_s), zero where invalid; masks[s]: (B, L_s) bool (False everywhere if s is missing)
        out = []
        for t in range(3):
            acc = (self.time_prompt[t] @ self.prompt[t] + self.bias[t])[None]  # (1, L_t, d)
            for s in range(3):
                if s == t:
                    continue
                key = f"{SHORT[s]}2{SHORT[t]}"
                f = self.feat[key](raw[s])  # (B, L_s, d)
                f = torch.where((masks[s] & present[:, s, None])[..., None], f, torch.zeros_like(f))
                acc = acc + torch.einsum("ml,bld->bmd", self.time[key], f)  # (B, L_t, d)
            out.append(self.readout[t](F.gelu(acc)))  # (B, L_t, d)
        return out


class SourceDecoder(nn.Module):
    """DPW's variational MI estimator for one stream (Barber and Agakov's bound): a Gaussian q(z | c) over the
    source's real pooled features z (layer-normed: unit scale for every source) given c, the pooled change that
    the cross-attention wrote into the target (what the source added). Trained by the Gaussian NLL where the real
    source is known (training batches carry the complete input). I(c; z) >= H(z) - E[-log q(z | c)], and the
    entropy of q itself, -1/2 log sigma^2(c) per dimension up to a constant, is the per-sample estimate:
    high when the stream pins down the real source, low when it carries nothing of it (an absent or useless
    stand-in). It needs no z at inference and does not depend on the rest of the batch."""

    def __init__(self, dim, scale: float = 10.0):
        super().__init__()
        self.scale = scale  # fixed multiplier of the head's output, so that it learns within a short run
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2 * dim)  # -> (mean, log variance), zero at init: every score starts equal
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, c):
        # c: (B, d) -> mean (B, d), log variance (B, d) in (-6, 6)
        mu, logvar = (self.scale * self.head(self.norm(c))).chunk(2, -1)
        return mu, 6.0 * torch.tanh(logvar / 6.0)

    def score(self, c):
        """(B,) the per-sample information estimate, -1/2 mean log sigma^2(c), in nats per dimension."""
        return -0.5 * self(c)[1].mean(-1)

    def nll(self, c, z):
        """Mean Gaussian negative log-likelihood (up to a constant) of the real source features ``z`` (B, d)."""
        mu, logvar = self(c)
        return 0.5 * (logvar + (z - mu).pow(2) * torch.exp(-logvar)).mean()


class ProMMA(nn.Module):
    def __init__(self, cfg: ProMMAConfig, spec: DataSpec):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        d, E = cfg.dim, 2 * cfg.dim
        if d % cfg.heads or cfg.pool not in ("mean", "last") or cfg.mme_gate not in ("hard", "soft", "always", "never") \
                or cfg.mme_train_gate not in ("label", "evaluator"):
            raise ValueError(f"ProMMA: need dim % heads == 0 (got {d}, {cfg.heads}), pool in mean/last "
                             f"(got {cfg.pool!r}), mme_gate in hard/soft/always/never (got {cfg.mme_gate!r}), "
                             f"mme_train_gate in label/evaluator (got {cfg.mme_train_gate!r})")
        lens = (spec.text_len, spec.audio_len, spec.vision_len)
        self.lens = lens
        # --- backbone (created first, so the baseline and ProMMA get the same backbone from the same seed) ---
        self.text_encoder = TextEncoder(cfg.text, spec.text_dim)
        in_dims = (self.text_encoder.out_dim, spec.audio_dim, spec.vision_dim)
        self.proj = nn.ModuleList(nn.Linear(in_dims[i], d, bias=False) for i in range(3))  # 1x1 conv, no bias
        self.cross = nn.ModuleDict({f"{SHORT[t]}{SHORT[s]}": CrossmodalEncoder(d, cfg.cross_depth, cfg.heads,
                                                                               cfg.mlp_ratio * d, cfg.dropout,
                                                                               cfg.attn_dropout)
                                    for t, s in PAIRS})
        self.mem = nn.ModuleList(MemoryEncoder(E, cfg.mem_depth, cfg.heads, cfg.mlp_ratio * E, cfg.dropout,
                                               cfg.attn_dropout) for _ in range(3))
        self.fusion = nn.Sequential(nn.Linear(3 * E, 3 * E), nn.ReLU(), nn.Dropout(cfg.out_dropout), nn.Linear(3 * E, 3 * E))
        self.out = nn.Linear(3 * E, 1)
        self.embed_drop = nn.Dropout(cfg.embed_dropout)
        self.register_buffer("pos", sinusoid(max(lens), d), persistent=False)  # (L_max, d)
        # mode index from the presence code 4*text + 2*audio + vision (0 = nothing present: never produced)
        lut = torch.zeros(8, dtype=torch.long)
        for k, (pt, pa, pv) in enumerate(MODES):
            lut[4 * pt + 2 * pa + pv] = k
        self.register_buffer("mode_lut", lut, persistent=False)
        self.register_buffer("mode_code", torch.tensor([4, 2, 1]), persistent=False)  # presence bits -> lut index
        # 0 = pretrain (plain backbone), 1 = adapt (prompts and modules); saved with the weights. ``forward`` reads
        # the Python copy ``_adapt`` (reading a GPU buffer would synchronise), kept in step by set_phase and on load.
        self.register_buffer("phase", torch.tensor(1))
        self._adapt = True
        self.register_load_state_dict_post_hook(lambda module, _: module.set_phase(int(module.phase)))
        # --- MPLMM prompts and ProMMA modules, drawn from a forked RNG: the global RNG stream after __init__
        # depends on the backbone alone, so one seed gives ProMMA, the baseline and every ablation the same
        # stage-1 training (same initial backbone, same dropout masks), and the same prompts ---
        with torch.random.fork_rng(devices=[]):
            Lp = cfg.prompt_len
            self.generator = PromptGenerator(d, lens, in_dims, Lp)
            self.signal_present = nn.ParameterList(nn.Parameter(torch.randn(L, d) * 0.02) for L in lens)  # (L_m, d)
            self.signal_missing = nn.ParameterList(nn.Parameter(torch.randn(L, d) * 0.02) for L in lens)  # (L_m, d)
            self.type_prompt = nn.Parameter(torch.randn(3, Lp, d))  # (3, L_p, d), one per memory encoder
            self.type_mix = nn.ParameterList(nn.Parameter(torch.randn(L, E) / math.sqrt(L)) for L in lens)  # (L_m, 2d)
            # --- ProMMA modules ---
            if cfg.use_mme:  # reads the pooled present features, the pooled stand-ins and the missing mode
                self.evaluator = nn.Sequential(nn.Linear(6 * d + N_MODES, cfg.mme_hidden), nn.GELU(),
                                               nn.Linear(cfg.mme_hidden, 3))
            if cfg.use_mpd or cfg.use_mpdc:
                self.shared_prompt = nn.Parameter(torch.randn(Lp, E) * 0.02)  # P_s: (L_p, 2d)
            if cfg.use_mpd:
                self.private_u = nn.Parameter(torch.randn(3, Lp, cfg.mpd_rank) * 0.02)  # U_m: (L_p, r)
                self.private_v = nn.Parameter(torch.randn(3, E, cfg.mpd_rank) * 0.02)  # V_m: (2d, r)
            if cfg.use_dpw:
                self.critic = nn.ModuleList(SourceDecoder(d, cfg.dpw_decoder_scale) for _ in PAIRS)
                if cfg.dpw_task_gate:  # one linear score per stream on its pooled cross-attention change, 0 at init
                    self.dpw_gate_w = nn.Parameter(torch.zeros(len(PAIRS), d))
                    self.dpw_gate_b = nn.Parameter(torch.zeros(len(PAIRS)))
            if cfg.use_mpdc:
                self.mpdc_gate = nn.Parameter(torch.zeros(3, cfg.mem_depth))  # g_{m,l}, 0 at init
        object.__setattr__(self, "_teacher", None)  # frozen stage-1 copy for MME pseudo labels (not in state_dict)

    # ------------------------------------------------------------------ inputs
    def _inputs(self, batch: Batch):
        """Raw features (zero wherever invalid), valid-position masks and the present flags, as lists over l, a, v."""
        B = len(batch)
        present = batch.present if batch.present is not None else torch.ones(B, 3, dtype=torch.bool, device=batch.labels.device)
        text = self.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment, batch.text_feat)  # (B, Lt, Dt)
        text_mask = batch.text_mask.bool() & (batch.text_ids != self.spec.unk_id)  # dropped tokens are [UNK]
        masks = [m & present[:, i, None] for i, m in enumerate((text_mask, batch.audio_mask, batch.vision_mask))]
        eff = torch.stack([m.any(1) for m in masks], 1)  # (B, 3): present with at least one valid position
        eff = torch.where(eff.any(1, keepdim=True), eff, present)  # never leave a sample with nothing present
        first = lambda m: torch.arange(m.shape[1], device=m.device)[None] == 0  # noqa: E731
        masks = [m | (eff[:, i, None] & ~m.any(1, keepdim=True) & first(m)) for i, m in enumerate(masks)]  # (B, L_i)
        raw = [torch.where(m[..., None], x, torch.zeros_like(x)) for m, x in zip(masks, (text, batch.audio, batch.vision))]
        return raw, masks, eff

    def mode_of(self, present: torch.Tensor) -> torch.Tensor:
        """(B, 3) bool -> (B,) missing-mode index of :data:`mmsa_core.missing.MODES`."""
        return self.mode_lut[(present.long() * self.mode_code).sum(1)]

    # ------------------------------------------------------------------ prompts and modules
    def mpdc_gates(self) -> torch.Tensor:
        """(3, mem_depth) the effective MPDC gates g_{m,l} = mpdc_gate_scale x the parameter."""
        return self.cfg.mpdc_gate_scale * self.mpdc_gate

    def private_delta(self) -> torch.Tensor:
        return torch.einsum("mpr,mer->mpe", self.private_u, self.private_v)  # D_m = U_m V_mᵀ: (3, L_p, 2d)

    def orth_loss(self) -> torch.Tensor:
        """Sum over pairs (D_l,D_a), (D_l,D_v), (D_a,D_v), (D_m,P_s) of the mean squared row-normalised Gram entry."""
        D = F.normalize(self.private_delta(), dim=-1)  # (3, L_p, 2d), unit tokens
        P = F.normalize(self.shared_prompt, dim=-1)  # (L_p, 2d)
        pairs = [(D[0], D[1]), (D[0], D[2]), (D[1], D[2]), (D[0], P), (D[1], P), (D[2], P)]
        return sum((a @ b.T).pow(2).mean() for a, b in pairs)

    def _type_prompts(self, present: torch.Tensor) -> torch.Tensor:
        """MPLMM's missing-type prompts: (B, 3, L_p, 2d), one per memory encoder, from the per-sample presence."""
        mix = 0
        for m in range(3):
            a_p = self.signal_present[m].T @ self.type_mix[m]  # (d, 2d)
            a_m = self.signal_missing[m].T @ self.type_mix[m]  # (d, 2d)
            mix = mix + torch.where(present[:, m, None, None], a_p, a_m)  # (B, d, 2d)
        return torch.einsum("mpd,bde->bmpe", self.type_prompt, mix)  # (B, 3, L_p, 2d)

    # ------------------------------------------------------------------ the backbone
    def _pool(self, z, mask):
        # z: (B, L, E); mask: (B, L) bool with a True per row -> (B, E)
        if self.cfg.pool == "mean":
            return masked_mean(z, mask)
        last = mask.shape[1] - 1 - mask.flip(1).to(torch.uint8).argmax(1)  # (B,) last valid position
        return z[torch.arange(len(z), device=z.device), last]

    def _encode(self, x, kmask, present=None, prompts: bool = False):
        """The MulT-style backbone on projected sequences ``x`` (3 x (B, L_m, d)) with key masks ``kmask``
        (3 x (B, L_m) bool, a True per row); ``prompts`` adds the memory-encoder prompts and the modules."""
        cfg = self.cfg
        B = x[0].shape[0]
        h = [self.embed_drop(x[m] + self.pos[: x[m].shape[1]].to(x[m].dtype)) for m in range(3)]  # (B, L_m, d)
        # 1. six crossmodal encoders: target t attends to source s
        cx = {(t, s): self.cross[f"{SHORT[t]}{SHORT[s]}"](h[t], h[s], kmask[s]) for t, s in PAIRS}
        c = {k: v[0] for k, v in cx.items()}  # (B, L_t, d) crossmodal outputs
        aux = {}
        # 2. DPW: per target, weights over its two streams from the MI between what each source added (the pooled
        # cross-attention change) and the REAL source, optionally plus a task-trained score of that change
        scale = {k: 1.0 for k in PAIRS}
        if prompts and cfg.use_dpw:
            delta = torch.stack([masked_mean(cx[k][1], kmask[k[0]]) for k in PAIRS], 1)  # (B, 6, d) change, pooled
            mi = torch.stack([self.critic[i].score(delta[:, i].detach()) for i in range(len(PAIRS))], 1)  # (B, 6)
            score = mi / cfg.dpw_temperature  # detached input: the decoders learn from their NLL alone
            if cfg.dpw_task_gate:  # trained by the task loss through the weights (its input detached)
                unit = F.normalize(delta.detach(), dim=-1)  # (B, 6, d)
                score = score + cfg.dpw_gate_scale * torch.einsum("bkd,kd->bk", unit, self.dpw_gate_w) + self.dpw_gate_b
            w = torch.softmax(score.view(B, 3, 2), -1)  # (B, 3, 2), rows sum to 1
            for i, k in enumerate(PAIRS):
                scale[k] = 2.0 * w[:, i // 2, i % 2, None, None]  # (B, 1, 1); equal weights = the plain backbone
            aux["dpw_weights"] = w
            aux["dpw_mi"] = mi.detach()
            aux["dpw_change"] = delta
        # 3. three memory encoders over [P_m | l<-x1 ; l<-x2 | missing-type prompt]
        Lp = cfg.prompt_len
        if prompts:
            tprompt = self._type_prompts(present)  # (B, 3, L_p, 2d)
            if cfg.use_mpd:
                private = self.shared_prompt[None] + self.private_delta()  # P_m = P_s + D_m: (3, L_p, 2d)
        pooled = []
        for t in range(3):
            s1, s2 = [s for s in range(3) if s != t]
            seq = torch.cat([c[t, s1] * scale[t, s1], c[t, s2] * scale[t, s2]], -1)  # (B, L_t, 2d)
            parts, masks, n_before = [seq], [kmask[t]], 0
            prior = gates = None
            if prompts:
                parts.append(tprompt[:, t])  # (B, L_p, 2d) appended (MPLMM)
                masks.append(kmask[t].new_ones(B, Lp))
                if cfg.use_mpd:
                    parts.insert(0, private[t].expand(B, -1, -1))  # (B, L_p, 2d) prepended
                    masks.insert(0, kmask[t].new_ones(B, Lp))
                    n_before = Lp
                if cfg.use_mpdc:  # P_s joins the self-attention output of every layer, gated
                    prior, gates = self.shared_prompt, self.mpdc_gates()[t]
            z = self.mem[t](torch.cat(parts, 1), torch.cat(masks, 1), prior, gates)  # (B, [L_p+] L_t [+L_p], 2d)
            pooled.append(self._pool(z[:, n_before : n_before + seq.shape[1]], kmask[t]))  # (B, 2d)
        # 4. concatenation, residual MLP block, linear head
        z = torch.cat(pooled, -1)  # (B, 6d)
        z = z + self.fusion(z)  # (B, 6d)
        return fp32_head(self.out, z).squeeze(-1), aux  # (B,) fp32 also under autocast

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> ModelOutput:
        # No host-device synchronisation on this path: no Python branch reads a tensor, no boolean-mask indexing;
        # losses over "the samples where m is missing" are masked means over the whole batch.
        cfg = self.cfg
        raw, masks, present = self._inputs(batch)  # 3 x (B, L_m, D_m), 3 x (B, L_m), (B, 3)
        B = present.shape[0]
        mode = self.mode_of(present)  # (B,)
        proj = [self.proj[m](raw[m]) for m in range(3)]  # (B, L_m, d); zero wherever invalid (no bias)
        kmask = [torch.where(present[:, m, None], masks[m], torch.ones_like(masks[m])) for m in range(3)]
        extras = {"mode": mode}
        losses = {}
        if not self._adapt:  # stage 1: the plain backbone; a missing modality is a zero sequence (positions only)
            pred, _ = self._encode(proj, kmask)
            return ModelOutput(pred, {"sentiment": sentiment_loss(pred, batch.labels)}, extras)

        missing = (~present).to(proj[0].dtype)  # (B, 3) 1 where the modality is missing
        # MPLMM generative prompts: a stand-in for every modality from the others that are present
        gen = self.generator(raw, masks, present)  # 3 x (B, L_m, d)
        # MME: is the stand-in of each missing modality worth using, for this sample?
        gate = present.new_ones(B, 3, dtype=proj[0].dtype)  # (B, 3) weight of the stand-in (MPLMM: always 1)
        if cfg.use_mme:
            feats = torch.cat([masked_mean(proj[m], masks[m]) for m in range(3)]  # (B, 3d), 0 where missing
                              + [masked_mean(gen[m], kmask[m]) * missing[:, m, None] for m in range(3)], -1)  # + (B, 3d)
            logit = self.evaluator(torch.cat([feats.detach(), F.one_hot(mode, N_MODES).to(feats.dtype)], -1))  # (B, 3)
            s = torch.sigmoid(logit)
            gate = {"hard": (s >= cfg.mme_threshold).to(s.dtype), "soft": s, "always": torch.ones_like(s),
                    "never": torch.zeros_like(s)}[cfg.mme_gate].detach()  # detached: only BCE trains the evaluator
            wanted = cfg.lambda_mme > 0 or cfg.mme_train_gate == "label"
            if wanted and self.training and self._teacher is not None and batch.complete is not None:
                label = self.pseudo_labels(batch, raw, masks, present, [g.detach() for g in gen])  # (B, 3)
                if cfg.mme_train_gate == "label":  # teacher forcing: the encoders see what the labels decide
                    gate = label
                # else ("evaluator"): the evaluator's own decision, as at inference
                if cfg.lambda_mme > 0:  # mean BCE over the (sample, modality) entries that are missing
                    bce = F.binary_cross_entropy_with_logits(logit, label, reduction="none")  # (B, 3)
                    losses["mme"] = cfg.lambda_mme * (bce * missing).sum() / missing.sum().clamp(min=1.0)
                extras["mme_label"] = label
            extras["mme_score"] = s.detach()
        extras["mme_gate"] = torch.where(present, torch.zeros_like(gate), gate).detach()  # (B, 3), 0 where present
        extras["missing"] = ~present
        # the encoder inputs: real + "present" prompt, or gated stand-in + "missing" prompt
        x = [torch.where(present[:, m, None, None], proj[m] + self.signal_present[m],
                         gate[:, m, None, None] * gen[m] + self.signal_missing[m]) for m in range(3)]  # (B, L_m, d)
        pred, aux = self._encode(x, kmask, present, prompts=True)
        losses["sentiment"] = sentiment_loss(pred, batch.labels)
        if "dpw_weights" in aux:
            extras["dpw_weights"] = aux["dpw_weights"].detach()  # (B, 3, 2): target l, a, v x its two sources
            extras["dpw_mi"] = aux["dpw_mi"].view(B, 3, 2)  # (B, 3, 2) the per-sample MI estimates
        if self.training:
            if cfg.use_mpd and cfg.lambda_orth > 0:
                losses["orth"] = cfg.lambda_orth * self.orth_loss()
            if cfg.use_dpw and cfg.lambda_mi > 0:
                if batch.complete is not None:  # the decoders need the real source
                    delta = aux["dpw_change"].detach()
                    z = self._real_pooled(batch.complete)  # 3 x (B, d)
                    nll = [self.critic[i].nll(delta[:, i], z[s]) for i, (t, s) in enumerate(PAIRS)]
                    losses["mi"] = cfg.lambda_mi * torch.stack(nll).mean()
            if cfg.lambda_gen > 0 and batch.complete is not None:
                losses["gen"] = cfg.lambda_gen * self._generation_loss(batch.complete, gen, missing)
        return ModelOutput(pred, losses, extras)

    @torch.no_grad()
    def _real_pooled(self, complete: Batch):
        """3 x (B, d): each modality's real projected features, pooled over its valid positions and layer-normed."""
        raw_c, masks_c, _ = self._inputs(complete)
        return [F.layer_norm(masked_mean(self.proj[m](raw_c[m]), masks_c[m]), (self.cfg.dim,)) for m in range(3)]

    def _generation_loss(self, complete: Batch, gen, missing):
        """MSE between each missing modality's generated stand-in and its real projected features (detached),
        averaged over the (sample, modality) pairs that are missing; 0 (with a graph) when nothing is missing."""
        raw_c, masks_c, _ = self._inputs(complete)
        total = 0.0
        for m in range(3):
            target = self.proj[m](raw_c[m]).detach()  # (B, L_m, d)
            err = (gen[m] - target).pow(2).mean(-1)  # (B, L_m)
            total = total + (masked_mean(err[..., None], masks_c[m]).squeeze(-1) * missing[:, m]).sum()
        return total / missing.sum().clamp(min=1.0)

    # ------------------------------------------------------------------ MME pseudo labels
    def set_phase(self, adapt: int) -> None:
        """0 = stage 1 (the plain backbone), 1 = stage 2 (prompts and modules): the buffer and its Python copy."""
        self.phase.fill_(int(adapt))
        self._adapt = bool(adapt)

    def snapshot_teacher(self) -> None:
        """Keep a frozen copy of the current (stage-1) model for the MME pseudo labels (not saved in state_dict)."""
        object.__setattr__(self, "_teacher", None)
        t = copy.deepcopy(self)
        t.set_phase(0)
        object.__setattr__(self, "_teacher", t.requires_grad_(False).eval())

    @torch.no_grad()
    def pseudo_labels(self, batch: Batch, raw, masks, present, gen) -> torch.Tensor:
        """(B, 3) MME targets from the frozen stage-1 backbone, in ITS input space: per missing modality m, does
        the stand-in gen_m bring the prediction closer to the complete-input one than leaving m absent (a zero
        sequence, which stage 1 has learned on when ``pretrain_eta`` > 0)? The other missing modalities are absent
        in both runs. Five runs over the whole batch (complete, all absent, m = l, a, v stood in), in one pass;
        entries of present modalities are meaningless (the loss masks them)."""
        T = self._teacher
        ref = raw[0]
        if next(T.parameters()).dtype != ref.dtype or next(T.parameters()).device != ref.device:
            T.to(device=ref.device, dtype=ref.dtype)
        T.eval()
        B = present.shape[0]
        raw_c, masks_c, _ = T._inputs(batch.complete)
        full = [T.proj[m](raw_c[m]) for m in range(3)]  # (B, L_m, d) complete input
        seen = [T.proj[m](raw[m]) for m in range(3)]  # (B, L_m, d) the present ones; zeros where missing
        kmask = [torch.where(present[:, m, None], masks[m], torch.ones_like(masks[m])) for m in range(3)]
        runs_x, runs_k = [], []
        for m in range(3):
            stood = torch.where(present[:, m, None, None], seen[m], gen[m])  # (B, L_m, d) m stood in where missing
            runs_x.append(torch.cat([full[m], seen[m]] + [stood if r == m else seen[m] for r in range(3)]))  # (5B, ..)
            runs_k.append(torch.cat([masks_c[m]] + [kmask[m]] * 4))
        pred, _ = T._encode(runs_x, runs_k)  # (5B,)
        y_full, y_abs, y_l, y_a, y_v = pred.to(ref.dtype).view(5, B)  # (autocast may give bf16 predictions)
        y_gen = torch.stack([y_l, y_a, y_v], 1)  # (B, 3)
        return mme_targets(y_full[:, None], y_gen, y_abs[:, None], self.cfg.mme_soft_labels, self.cfg.mme_temperature)

    # ------------------------------------------------------------------ stages
    def _is_backbone(self, name: str) -> bool:
        return name.split(".")[0] in BACKBONE

    def start_pretrain(self) -> None:
        """Stage 1: only the backbone trains; prompts and modules are off."""
        self.set_phase(0)
        for n, p in self.named_parameters():
            p.requires_grad_(self._is_backbone(n))

    def start_adapt(self, teacher: bool = True) -> None:
        """Stage 2: snapshot the frozen backbone for MME (``teacher``: not under protocol A, where nothing is
        missing), freeze the backbone except ``adapt_trainable`` (MPLMM: the input projections and the output
        layer), train the prompts and modules."""
        if self.cfg.use_mme and teacher:
            self.snapshot_teacher()
        self.set_phase(1)
        keep = set(self.cfg.adapt_trainable)
        for n, p in self.named_parameters():
            top = n.split(".")[0]
            p.requires_grad_(not self._is_backbone(n) or top in keep)

    def stages(self, train_cfg) -> list[Stage]:
        c = self.cfg
        pre = {"protocol": "B", "train_level": c.pretrain_eta, "select_level": c.pretrain_eta}
        adapt = ({"protocol": "B", "train_level": c.adapt_eta if train_cfg.train_level is None else train_cfg.train_level}
                 if train_cfg.protocol == "B" else {"protocol": "A"})
        for over, ep, lr in ((pre, c.pretrain_epochs, c.pretrain_lr), (adapt, c.adapt_epochs, c.adapt_lr)):
            if ep is not None:
                over["epochs"] = ep
            if lr is not None:
                over["lr"] = lr
        adapt_prep = partial(ProMMA.start_adapt, teacher=adapt["protocol"] == "B")
        return [Stage("pretrain", pre, ProMMA.start_pretrain), Stage("adapt", adapt, adapt_prep)]


__all__ = ["MPLMMConfig", "ProMMA", "ProMMAConfig", "promma_preset", "mme_targets", "SourceDecoder", "PRESET_DATA"]
