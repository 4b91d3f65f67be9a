"""LNLN: Language-dominated Noise-resistant Learning Network.

Zhang, Wang, Yu, "Towards Robust Multimodal Sentiment Analysis with Incomplete Data", NeurIPS 2024,
arXiv:2409.20012. Our own implementation of the model that ``shared/spec/lnln.md`` states; at the MOSI, MOSEI and
SIMS presets it has exactly the authors' number of parameters outside the text encoder.

The model, in the order of :meth:`LNLN.forward`:

1. Unimodal embedding: per modality a linear projection and a 2-layer Transformer that summarises the sequence
   into T = 8 learned summary tokens (text goes through the text encoder first): h_l, h_a, h_v (B, T, d).
2. Dominant Modality Correction (DMC): a completeness check predicts w in (0, 1), how complete the language is;
   a proxy generator builds h_p from audio and vision; h_d = w * h_l + (1 - w) * h_p, with a gradient reversal
   layer on h_p; an effectiveness discriminator tells h_d from the complete input's language tokens.
3. Dominant-modality-based Multimodal Learning (DMML): a language encoder gives 3 hidden states of h_d, which
   guide 3 adaptive hyper-modality layers over audio and vision; a cross Transformer fuses the hyper-modality
   state (source) into the language (target); the mean of the fused tokens gives the prediction.
4. Reconstructor (training): rebuilds each modality's complete summary tokens from the incomplete ones.

Loss = alpha * L_cc + beta * L_adv + gamma * L_rec + sigma * L_sentiment; ``ModelOutput.losses`` holds the four
weighted terms (the trainer sums them).

Where ours departs from the paper and the authors' code (what is learned is otherwise the same):

- The complete input (the target of the reconstructor and the "clean" class of the discriminator) is embedded in
  ONE batched pass together with the incomplete input ([incomplete; complete] along the batch), not in a second
  pass through the text encoder and the embedding networks; only in training, and only when a loss needs it.
- Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) instead of an explicit
  matmul + softmax (the tiny 8 x 8 hyper-modality attention stays explicit, so its weights can be shown).
- Attention masks: padded and dropped audio/vision frames and padded text positions are excluded from attention
  (the authors attend to the zero vectors), so a missing frame cannot leak into the prediction. Dropped text
  tokens are [UNK] and stay visible, as in the paper. ``mask_attention=False`` (model ``lnln_authors``) attends
  to everything, as the authors do.
- The completeness target is 1 minus the ACHIEVED text drop rate of the sample (``batch.rates``), not the drawn
  rate r; they differ by sampling noise on short sentences.
- The warm-up + cosine learning-rate schedule is stepped per optimiser step, not per epoch (the shared trainer).
- Checkpoints are selected on the validation split (the authors select on the test split), and every metric of a
  row comes from that one checkpoint.
- The training corruption is drawn from a generator seeded per (seed, epoch, split), so it differs every epoch
  and is the same with or without data-loader workers (the authors reuse one seed for every epoch).
- ``use_adversarial=False`` removes the discriminator AND the gradient reversal (the paper's ablation).
- The GRL: in the authors' code it sits on h_p before the mixing, so it also reverses the SENTIMENT-loss gradient
  that reaches the proxy generator (the generator is pushed to make h_p worse for the prediction). The MOSI /
  MOSEI / SIMS presets keep that (``grl_only_discriminator=False``); the ``"default"`` preset reverses only the
  discriminator's gradient, as the paper describes the GRL (part of the discriminator); the forward pass is the
  same. On the embedded dataset this let the completeness check learn (Spearman(w, text missing rate) about
  -0.64..-0.72 instead of -0.49..-0.56 after 15-20 epochs, measured with the precomputed text features).
- The ``"default"`` preset (embedded dataset) is ours: width 64, 4 heads x 16, positional embeddings initialised
  N(0, 0.02^2) (with the authors' N(0, 1) the synthetic features, much smaller than BERT's, drown in the positions
  and w does not learn), the packaged MiniLM, frozen, reading the token ids instead of a fine-tuned BERT.

Speed levers (ours; switches of :class:`LNLNConfig`, off in the ``"default"`` preset so that its results stay
bit-identical, on in the paper presets; each computes the same function up to float rounding, which
``tests/test_lnln.py`` checks for predictions and gradients):

- ``trim_padding``: each modality is cut to the longest valid length in the batch before its embedding (trailing
  padding is masked everywhere, so nothing changes but the work; exact only with masked attention, so it is
  refused with ``mask_attention=False``).
- ``share_unchanged``: in the batched pass, a sample whose incomplete modality equals its complete one (about half
  of them under protocol A's training draw) is embedded once and used in both roles; the gradients of both uses
  add up on the one tensor, as they would over two passes.
- ``summary_only_last``: the last layer of each unimodal embedding computes only the T summary tokens it returns
  (queries = the summary tokens, keys and values = every position), not every position's output.
- ``drop_masked``: each unimodal embedding leaves out the masked positions (padding and dropped audio / vision
  frames) after adding the positional embedding: no query attends to them and their outputs are never read, so
  under protocol A at rate r the audio and vision sequences shrink by about r (the gain is in evaluation; in
  training the complete rows of the joint pass keep every frame). Like trimming, refused with unmasked attention.
- ``checkpoint_text``: activation checkpointing of a BERT text encoder in training (less memory, one more forward
  of the encoder per step); nothing changes with precomputed features.
- ``cpu_bf16``: bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX; fp32 elsewhere, with a warning);
  predictions differ from fp32 by bf16 rounding (``benchmarks/bench_lnln.py`` reports by how much).

Kept as the authors have it (paper presets): positional embeddings initialised N(0, 1) (``pos_std``), summary
tokens zeros, proxy and hyper-modality tokens ones; the hyper-modality residual is added to the layer-normed state;
reconstruction and discrimination targets (the complete input's tokens) are not detached; no dropout; no gradient
clipping; MOSEI, like SIMS, uses 4 fusion layers (the authors' MOSEI config; the parameter count confirms it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..data.mmsa import Batch, DataSpec
from .common import ModelOutput, fp32_head, sentiment_loss
from .layers import CrossTransformer, SummaryTransformer, Transformer, grad_reverse
from .text import TextEncoder, TextEncoderConfig

log = logging.getLogger(__name__)

# The fields of a Batch that the embedding networks read, per modality (the last one is the modality's mask);
# the batched pass concatenates exactly these.
MODALITY_FIELDS = {"text": ("text_ids", "text_segment", "text_feat", "text_mask"),
                   "audio": ("audio", "audio_mask"), "vision": ("vision", "vision_mask")}
INPUT_FIELDS = ("text_ids", "text_mask", "text_segment", "text_feat", "audio", "audio_mask", "vision", "vision_mask")

# Data shapes of the three benchmark sets (MMSA unaligned pickles); ``text_dim`` is BERT-base's width.
PAPER_SPECS = {
    "mosi": DataSpec(text_len=50, text_dim=768, audio_len=375, audio_dim=5, vision_len=500, vision_dim=20),
    "mosei": DataSpec(text_len=50, text_dim=768, audio_len=500, audio_dim=74, vision_len=500, vision_dim=35),
    "sims": DataSpec(text_len=39, text_dim=768, audio_len=400, audio_dim=33, vision_len=55, vision_dim=709,
                     label_min=-1.0, label_max=1.0, language="zh"),
}


@dataclass
class LNLNConfig:
    """Sizes, loss weights and ablation switches. The defaults are the ``"default"`` preset (the embedded
    dataset); :func:`lnln_preset` gives the authors' MOSI / MOSEI / SIMS settings."""

    dim: int = 64  # model width d
    heads: int = 4  # attention heads of the Transformers
    dim_head: int = 16  # width per head (the authors: 8 heads x 64)
    mlp_dim: int = 64  # MLP width of the Transformers
    n_tokens: int = 8  # T: summary tokens per modality (also proxy and hyper-modality tokens)
    embed_depth: int = 2  # unimodal embedding Transformers
    dmc_depth: int = 2  # completeness check and proxy generator
    rec_depth: int = 2  # reconstructor, per modality
    lang_depth: int = 2  # DMML language encoder; the hyper-modality learning has lang_depth + 1 layers
    hyper_dim_head: int = 16  # head width of the hyper-modality layers (heads = dim / hyper_dim_head)
    fusion_depth: int = 2  # cross Transformer (the authors: 4 for MOSEI and SIMS)
    disc_hidden: int = 64  # effectiveness discriminator MLP
    cc_hidden: int = 64  # completeness check MLP
    dropout: float = 0.0
    pos_std: float = 0.02  # init std of the learned positional embeddings (the authors: 1.0, torch.randn)
    alpha: float = 0.9  # completeness check loss
    beta: float = 0.8  # adversarial (effectiveness discriminator) loss
    gamma: float = 0.1  # reconstruction loss
    sigma: float = 1.0  # sentiment loss
    use_dmc: bool = True  # False: h_d = h_l (no completeness check, proxy generator nor discriminator)
    use_reconstructor: bool = True
    use_adversarial: bool = True  # discriminator + gradient reversal (needs use_dmc)
    # False (the authors' code): the reversal sits on h_p, so the sentiment-loss gradient that reaches the proxy
    # generator is reversed too. True: only the discriminator's gradient is reversed (the paper's wording: the GRL
    # is part of the discriminator). The forward pass is the same.
    grl_only_discriminator: bool = True
    # False (the authors' models/basic_layers.py): the unimodal Transformers attend to every position, padding and
    # dropped (zeroed) frames included; True (ours): those are excluded. The text encoder masks padding either way.
    # With False every padded position counts, so inputs must keep their full length: trim_padding must be off.
    mask_attention: bool = True
    # speed levers (see the module docstring); none changes what is computed beyond float rounding
    trim_padding: bool = False  # cut each modality to the batch's longest valid length before embedding it
    share_unchanged: bool = False  # embed a complete row only where it differs from the incomplete one
    summary_only_last: bool = False  # last layer of each unimodal embedding: only the summary tokens' outputs
    drop_masked: bool = False  # unimodal embeddings: masked positions (padding, dropped frames) left out
    checkpoint_text: bool = False  # activation checkpointing of a BERT text encoder in training
    cpu_bf16: bool = False  # bf16 autocast on CPUs with native bf16 (fp32 elsewhere)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)


@dataclass
class LNLNAuthorsConfig(LNLNConfig):
    """LNLN as the authors' code runs it: attention masks off (with ``lnln_authors_*`` presets for the rest of
    the authors' protocol: see :mod:`mmsa_core.practices`)."""

    mask_attention: bool = False


@dataclass
class ALMTConfig(LNLNConfig):
    """LNLN without its three additions: language-guided hyper-modality learning and fusion only (ALMT-like)."""

    use_dmc: bool = False
    use_reconstructor: bool = False
    use_adversarial: bool = False


def lnln_preset(name: str) -> LNLNConfig:
    """The configuration for a dataset: ``"mosi"``, ``"mosei"``, ``"sims"`` (the authors' settings, BERT-base
    text encoder) or ``"default"`` (the embedded dataset, sized to train in seconds on a CPU)."""
    paper = LNLNConfig(dim=128, heads=8, dim_head=64, mlp_dim=128, n_tokens=8, hyper_dim_head=16,
                       disc_hidden=64, cc_hidden=64, pos_std=1.0, grl_only_discriminator=False,
                       alpha=0.9, beta=0.8, gamma=0.1, sigma=1.0, trim_padding=True, share_unchanged=True,
                       summary_only_last=True, drop_masked=True,
                       text=TextEncoderConfig(kind="pretrained", name_or_path="bert-base-uncased"))
    presets = {
        "mosi": paper,
        "mosei": replace(paper, fusion_depth=4),
        "sims": replace(paper, fusion_depth=4, beta=0.6,
                        text=TextEncoderConfig(kind="pretrained", name_or_path="bert-base-chinese")),
        # the embedded dataset: our sizes, the token ids read by the packaged MiniLM, frozen (lnln_default.yaml)
        "default": LNLNConfig(text=TextEncoderConfig(kind="pretrained", name_or_path="minilm", finetune=False)),
    }
    if name not in presets:
        raise ValueError(f"unknown LNLN preset {name!r}; expected one of {sorted(presets)}")
    return presets[name]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), so that CPU autocast can pay off."""
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in checks if f is not None)


def trim_to_valid(fields: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every (B, L, ...) tensor of ``fields`` cut to the longest valid length of ``mask`` (B, L) (at least 1):
    the positions cut are masked in every row, so attention over the rest computes the same values."""
    L = mask.shape[1]
    n = max(1, int((mask.bool().any(0) * torch.arange(1, L + 1, device=mask.device)).max()))  # one host sync
    return fields if n == L else {k: v[:, :n] for k, v in fields.items()}


# ----------------------------------------------------------------------------------------------------------
# blocks used only by LNLN


class PlainTransformer(nn.Module):
    """A learned positional embedding, then a pre-norm Transformer (optionally every hidden state)."""

    def __init__(self, dim, seq_len, depth, heads, dim_head, mlp_dim, dropout=0.0):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, x, return_all: bool = False):
        # x: (B, L, D) -> (B, L, D), or a list of depth + 1 such states (the first is x + pos)
        return self.transformer(x + self.pos[:, : x.shape[1]], return_all=return_all)


class UnimodalEmbedding(nn.Module):
    """Linear(in_dim -> d), then a summarising Transformer; keeps the T summary tokens."""

    def __init__(self, in_dim, seq_len, cfg: LNLNConfig):
        super().__init__()
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.summary = SummaryTransformer(cfg.dim, seq_len, cfg.n_tokens, cfg.embed_depth, cfg.heads, cfg.dim_head,
                                          cfg.mlp_dim, cfg.dropout, summary_only_last=cfg.summary_only_last,
                                          drop_masked=cfg.drop_masked)

    def forward(self, x, mask):
        # x: (B, L, in_dim); mask: (B, L) bool, True = valid and kept
        return self.summary(self.proj(x), mask)  # (B, T, d)


class CompletenessCheck(nn.Module):
    """Predicts how complete the language input is, w in (0, 1), from its summary tokens."""

    def __init__(self, cfg: LNLNConfig):
        super().__init__()
        self.summary = SummaryTransformer(cfg.dim, cfg.n_tokens, 1, cfg.dmc_depth, cfg.heads, cfg.dim_head,
                                          cfg.mlp_dim, cfg.dropout)
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.cc_hidden), nn.LeakyReLU(0.1), nn.Linear(cfg.cc_hidden, 1))

    def forward(self, h_l):
        # h_l: (B, T, d) -> w: (B,)
        return torch.sigmoid(self.head(self.summary(h_l)[:, 0]).squeeze(-1))


class ProxyGenerator(nn.Module):
    """Builds a proxy of the language features from audio and vision: T learned proxy tokens (init ones) are
    concatenated with h_a and h_v and summarised into T tokens."""

    def __init__(self, cfg: LNLNConfig):
        super().__init__()
        T = cfg.n_tokens
        self.tokens = nn.Parameter(torch.ones(1, T, cfg.dim))
        self.summary = SummaryTransformer(cfg.dim, 3 * T, T, cfg.dmc_depth, cfg.heads, cfg.dim_head, cfg.mlp_dim,
                                          cfg.dropout)

    def forward(self, h_a, h_v):
        # h_a, h_v: (B, T, d) -> h_p: (B, T, d)
        x = torch.cat([self.tokens.expand(h_a.shape[0], -1, -1), h_a, h_v], 1)  # (B, 3T, d)
        return self.summary(x)


class HyperModalityLayer(nn.Module):
    """One layer of adaptive hyper-modality learning (ALMT): the dominant (language) tokens query audio and
    vision separately, the two attention outputs are summed, projected and added to the hyper-modality state."""

    def __init__(self, dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm_d, self.norm_a, self.norm_v, self.norm_h = (nn.LayerNorm(dim) for _ in range(4))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k_audio = nn.Linear(dim, inner, bias=False)
        self.to_k_vision = nn.Linear(dim, inner, bias=False)
        self.to_v_audio = nn.Linear(dim, inner, bias=False)
        self.to_v_vision = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def _heads(self, x):  # (B, L, H*dh) -> (B, H, L, dh)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def attend(self, q, k, v):
        # q: (B, H, Lq, dh); k, v: (B, H, Lk, dh) -> out (B, H, Lq, dh), weights (B, H, Lq, Lk)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return weights @ v, weights

    def forward(self, h_d, h_a, h_v, hyper):
        # h_d, h_a, h_v, hyper: (B, T, d)
        h_d, h_a, h_v, hyper = self.norm_d(h_d), self.norm_a(h_a), self.norm_v(h_v), self.norm_h(hyper)
        q = self._heads(self.to_q(h_d))  # (B, H, T, dh)
        out_a, w_a = self.attend(q, self._heads(self.to_k_audio(h_a)), self._heads(self.to_v_audio(h_a)))
        out_v, w_v = self.attend(q, self._heads(self.to_k_vision(h_v)), self._heads(self.to_v_vision(h_v)))
        shift = self.to_out((out_a + out_v).transpose(1, 2).flatten(2))  # (B, T, d)
        # as in the authors' code, the residual adds to the layer-normed state
        return hyper + shift, w_a.mean(1), w_v.mean(1)  # (B, T, d), (B, T, T), (B, T, T)


class DMML(nn.Module):
    """Dominant-modality-based multimodal learning: language encoder, hyper-modality learning, fusion, head."""

    def __init__(self, cfg: LNLNConfig):
        super().__init__()
        d, T = cfg.dim, cfg.n_tokens
        if d % cfg.hyper_dim_head:
            raise ValueError(f"LNLN: dim {d} must be a multiple of hyper_dim_head {cfg.hyper_dim_head}")
        self.language_encoder = PlainTransformer(d, T, cfg.lang_depth, cfg.heads, cfg.dim_head, cfg.mlp_dim,
                                                 cfg.dropout)
        self.hyper_tokens = nn.Parameter(torch.ones(1, T, d))
        self.hyper_layers = nn.ModuleList(HyperModalityLayer(d, d // cfg.hyper_dim_head, cfg.hyper_dim_head)
                                          for _ in range(cfg.lang_depth + 1))
        self.fusion = CrossTransformer(d, T, T, cfg.fusion_depth, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.dropout)
        self.head = nn.Linear(d, 1)

    def forward(self, h_d, h_a, h_v):
        # h_d, h_a, h_v: (B, T, d)
        states = self.language_encoder(h_d, return_all=True)  # lang_depth + 1 tensors (B, T, d)
        hyper = self.hyper_tokens.expand(h_d.shape[0], -1, -1)  # (B, T, d)
        attn_a, attn_v = [], []
        for layer, h in zip(self.hyper_layers, states):
            hyper, w_a, w_v = layer(h, h_a, h_v, hyper)  # (B, T, d), (B, T, T) x 2
            attn_a.append(w_a)
            attn_v.append(w_v)
        fused = self.fusion(hyper, states[-1])  # (B, 1 + T, d): source = hyper-modality, target = language
        pred = fp32_head(self.head, fused[:, 1:].mean(1)).squeeze(-1)  # (B,) fp32 also under autocast
        return pred, torch.stack(attn_a, 1), torch.stack(attn_v, 1)  # (B,), (B, depth+1, T, T) x 2


# ----------------------------------------------------------------------------------------------------------


class LNLN(nn.Module):
    """LNLN for batches of :class:`~mmsa_core.data.mmsa.Batch`; see the module docstring.

    ``model.introspect = True`` makes an evaluation-mode forward also embed ``batch.complete`` (when given) to
    report the reconstruction error and discriminator accuracy in ``extras`` (off by default: it doubles the
    cost of evaluation).
    """

    def __init__(self, cfg: LNLNConfig, spec: DataSpec):
        super().__init__()
        for lever in ("trim_padding", "drop_masked"):
            if getattr(cfg, lever) and not cfg.mask_attention:
                raise ValueError(f"LNLN: {lever} needs mask_attention (unmasked attention attends to the padding, "
                                 f"so cutting it changes the result); set {lever} false")
        self.cfg, self.spec = cfg, spec
        self.introspect = False
        self._warned_bf16 = False  # cpu_bf16 on a CPU without native bf16: warned once
        self.text_encoder = TextEncoder(cfg.text, spec.text_dim)
        self.embed_text = UnimodalEmbedding(self.text_encoder.out_dim, spec.text_len, cfg)
        self.embed_audio = UnimodalEmbedding(spec.audio_dim, spec.audio_len, cfg)
        self.embed_vision = UnimodalEmbedding(spec.vision_dim, spec.vision_len, cfg)
        self.use_adversarial = cfg.use_dmc and cfg.use_adversarial
        if cfg.use_dmc:
            self.completeness = CompletenessCheck(cfg)
            self.proxy = ProxyGenerator(cfg)
        if self.use_adversarial:
            self.discriminator = nn.Sequential(nn.Linear(cfg.dim, cfg.disc_hidden), nn.LeakyReLU(0.1),
                                               nn.Linear(cfg.disc_hidden, 2))
        if cfg.use_reconstructor:  # one per modality, in the order text, audio, vision
            self.reconstructor = nn.ModuleList(
                PlainTransformer(cfg.dim, cfg.n_tokens, cfg.rec_depth, cfg.heads, cfg.dim_head, cfg.mlp_dim,
                                 cfg.dropout) for _ in range(3))
        self.dmml = DMML(cfg)
        bert = self.text_encoder.bert
        if cfg.checkpoint_text and bert is not None:  # transformers recomputes each layer in the backward pass
            if hasattr(bert, "activation_checkpointing_enable"):  # the name since transformers 5.x
                bert.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with torch.no_grad():  # the authors initialise every positional embedding with torch.randn
            for name, p in self.named_parameters():
                if not name.startswith("text_encoder.") and name.rsplit(".", 1)[-1] in ("pos", "pos_source", "pos_target"):
                    p.normal_(0.0, cfg.pos_std)

    @property
    def needs_complete(self) -> bool:
        """Whether a loss reads the complete input (reconstructor or discriminator)."""
        return self.cfg.use_reconstructor or self.use_adversarial

    def num_params(self, exclude_text_encoder: bool = True) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if not (exclude_text_encoder and n.startswith("text_encoder.")))

    # -- embeddings ------------------------------------------------------------------------------------------

    def embed_modality(self, name: str, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summary tokens (R, T, d) of one modality from its fields ``x`` (those of ``MODALITY_FIELDS[name]``, R rows)."""
        mask_key = MODALITY_FIELDS[name][-1]
        if self.cfg.trim_padding:
            x = trim_to_valid(x, x[mask_key])  # (R, L', ...) with L' = the longest valid length
        # mask_attention=False (the authors'): the summary Transformer attends to every position, zeroed frames included
        attn_mask = x[mask_key] if self.cfg.mask_attention else None
        if name == "text":
            text = self.text_encoder(x["text_ids"], x["text_mask"], x["text_segment"], x["text_feat"])  # (R, Lt, H)
            return self.embed_text(text, None if attn_mask is None else attn_mask.bool())  # padding masked, [UNK] visible
        # audio / vision: (R, L, D_m); padded and dropped frames masked (unless mask_attention=False)
        return (self.embed_audio if name == "audio" else self.embed_vision)(x[name], attn_mask)

    def embed(self, text_ids, text_mask, text_segment, text_feat, audio, audio_mask, vision, vision_mask):
        """Unimodal embeddings (h_l, h_a, h_v), each (B, T, d)."""
        h_l = self.embed_modality("text", dict(text_ids=text_ids, text_segment=text_segment, text_feat=text_feat,
                                               text_mask=text_mask))  # (B, T, d)
        h_a = self.embed_modality("audio", dict(audio=audio, audio_mask=audio_mask))  # (B, T, d)
        h_v = self.embed_modality("vision", dict(vision=vision, vision_mask=vision_mask))  # (B, T, d)
        return h_l, h_a, h_v

    def embed_batch(self, batch: Batch):
        return self.embed(**{k: getattr(batch, k) for k in INPUT_FIELDS})

    def embed_pair(self, batch: Batch, complete: Batch):
        """Embeddings of the incomplete and the complete input in ONE batched pass: two triples of (B, T, d).

        With ``share_unchanged``, a modality's complete row enters the pass only where it differs from the
        incomplete row (K of the B rows); elsewhere the incomplete row's tokens serve both roles."""
        B = len(batch)
        if not self.cfg.share_unchanged:
            joint = self.embed(**{k: torch.cat([getattr(batch, k), getattr(complete, k)]) for k in INPUT_FIELDS})
            return tuple(h[:B] for h in joint), tuple(h[B:] for h in joint)  # (2B, T, d) -> 2 x (B, T, d)
        inc, com = [], []
        for m, keys in MODALITY_FIELDS.items():
            changed = torch.stack([(getattr(batch, k) != getattr(complete, k)).flatten(1).any(1) for k in keys]).any(0)
            idx = changed.nonzero().squeeze(1)  # (K,) rows whose complete input differs
            h = self.embed_modality(m, {k: torch.cat([getattr(batch, k), getattr(complete, k)[idx]]) for k in keys})
            inc.append(h[:B])  # (B + K, T, d) -> (B, T, d)
            com.append(h[:B].index_copy(0, idx, h[B:]))  # (B, T, d): the K differing rows replaced
        return tuple(inc), tuple(com)

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> ModelOutput:
        if not (self.cfg.cpu_bf16 and batch.labels.device.type == "cpu"):
            return self.compute(batch)
        if not cpu_has_native_bf16():
            if not self._warned_bf16:
                log.warning("LNLN cpu_bf16: this CPU has no native bf16 (AVX512-BF16 / AMX); running in fp32")
                self._warned_bf16 = True
            return self.compute(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.compute(batch)
        return ModelOutput(out.pred.float(), {k: v.float() for k, v in out.losses.items()}, out.extras)

    def compute(self, batch: Batch) -> ModelOutput:
        """The forward pass proper (``forward`` adds the optional CPU bf16 autocast around it)."""
        cfg = self.cfg
        B = len(batch)
        with_complete = batch.complete is not None and self.needs_complete and (self.training or self.introspect)

        # 1. unimodal embeddings: (B, T, d) each; with the complete input in the same pass when a loss needs it
        if with_complete:
            (h_l, h_a, h_v), (c_l, c_a, c_v) = self.embed_pair(batch, batch.complete)
        else:
            h_l, h_a, h_v = self.embed_batch(batch)
        losses, extras = {}, {}

        # 2. dominant modality correction
        if cfg.use_dmc:
            w = self.completeness(h_l)  # (B,) predicted completeness of the language
            target = 1.0 - batch.rates[:, 0].float() if batch.rates is not None else torch.ones_like(w)
            losses["completeness"] = cfg.alpha * F.mse_loss(w.float(), target)
            h_p = self.proxy(h_a, h_v)  # (B, T, d) proxy language from audio and vision
            h_p_rev = grad_reverse(h_p) if self.use_adversarial else h_p  # identity forward, gradient x -1 backward
            mix = lambda p: w[:, None, None] * h_l + (1.0 - w)[:, None, None] * p  # noqa: E731
            h_d = mix(h_p if cfg.grl_only_discriminator else h_p_rev)  # (B, T, d) corrected language
            extras["w"] = w.detach()
            if self.use_adversarial and with_complete:
                h_adv = mix(h_p_rev) if cfg.grl_only_discriminator else h_d  # the same values as h_d
                logits = self.discriminator(torch.cat([h_adv, c_l]))  # (2B, T, 2): corrected, then complete
                labels = (torch.arange(2 * B, device=h_d.device) < B).long()[:, None].expand(-1, cfg.n_tokens)  # (2B, T)
                losses["adversarial"] = cfg.beta * F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
                correct = (logits.argmax(-1) == labels).float().mean(1)  # (2B,)
                extras["disc_acc"] = ((correct[:B] + correct[B:]) / 2).detach()  # (B,)
        else:
            h_d = h_l

        # 3. dominant-modality-based multimodal learning
        pred, attn_a, attn_v = self.dmml(h_d, h_a, h_v)  # (B,), (B, lang_depth+1, T, T) x 2
        losses["sentiment"] = cfg.sigma * sentiment_loss(pred, batch.labels)
        extras["hyper_attn_audio"], extras["hyper_attn_vision"] = attn_a.detach(), attn_v.detach()

        # 4. reconstruction of the complete summary tokens from the incomplete ones
        if cfg.use_reconstructor and with_complete:
            rec = torch.stack([r(h) for r, h in zip(self.reconstructor, (h_l, h_a, h_v))], 1)  # (B, 3, T, d)
            err = (rec.float() - torch.stack([c_l, c_a, c_v], 1).float()).pow(2).mean((2, 3))  # (B, 3)
            losses["reconstruction"] = cfg.gamma * err.mean()
            extras["rec_error"] = err.detach()
        return ModelOutput(pred, losses, extras)


__all__ = ["ALMTConfig", "LNLN", "LNLNAuthorsConfig", "LNLNConfig", "PAPER_SPECS", "lnln_preset"]
