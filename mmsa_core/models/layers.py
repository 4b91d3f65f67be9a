"""Building blocks shared by the models: pre-norm Transformers with fused attention, pooling, gradient reversal.

Attention follows the layout of the LNLN authors' blocks (a LayerNorm on each of the q, k, v inputs, bias-free
q/k/v projections, inner width heads x dim_head, output projection with bias), computed with
``torch.nn.functional.scaled_dot_product_attention``. Masks are boolean, True = a position that may be attended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (B, L, D) where ``mask`` (B, L) is True; zero for a sample with no valid position."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, norm_qkv: bool = True, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dropout = heads, dropout
        self.norm_q = nn.LayerNorm(dim) if norm_qkv else nn.Identity()
        self.norm_k = nn.LayerNorm(dim) if norm_qkv else nn.Identity()
        self.norm_v = nn.LayerNorm(dim) if norm_qkv else nn.Identity()
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, q, k, v, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # q: (B, Lq, D); k, v: (B, Lk, D); key_mask: (B, Lk) bool
        B, Lq, _ = q.shape
        Lk = k.shape[1]
        split = lambda t, L: t.view(B, L, self.heads, -1).transpose(1, 2)  # noqa: E731  (B, H, L, dh)
        q = split(self.to_q(self.norm_q(q)), Lq)
        k = split(self.to_k(self.norm_k(k)), Lk)
        v = split(self.to_v(self.norm_v(v)), Lk)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(B, Lq, -1))  # (B, Lq, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + Attn(x, ctx, ctx); x + MLP(x). Self-attention when ``ctx`` is None."""

    def __init__(self, dim, heads=8, dim_head=64, mlp_dim=128, dropout=0.0, attn_dropout=None):
        super().__init__()
        # attn_dropout: dropout of the attention weights alone (None: ``dropout``)
        self.attn = Attention(dim, heads, dim_head, dropout=dropout if attn_dropout is None else attn_dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x, mask=None, ctx=None, ctx_mask=None):
        if ctx is None:
            x = x + self.attn(x, x, x, mask)
        else:
            x = x + self.attn(x, ctx, ctx, ctx_mask)
        return x + self.ff(x)


class Transformer(nn.Module):
    """A stack of pre-norm layers. ``forward`` returns the last state, or with ``return_all`` the list of
    hidden states [input, after layer 1, ..., after layer depth]."""

    def __init__(self, dim, depth, heads=8, dim_head=64, mlp_dim=128, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))

    def forward(self, x, mask=None, return_all: bool = False):
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return states if return_all else x


class SummaryTransformer(nn.Module):
    """Token-summarising Transformer: ``n_summary`` learned tokens are prepended to a sequence of length
    ``seq_len``, a learned positional embedding is added, and the first ``n_summary`` outputs are returned.

    Two switches (ours) compute the same function with less work, up to float rounding:

    - ``summary_only_last``: the last layer computes only the ``n_summary`` outputs that are returned (its queries
      are the summary tokens; keys and values are still every position);
    - ``drop_masked``: the masked positions (padding, dropped frames) are removed from the sequence after the
      positional embedding is added, since no query ever attends to them and their own outputs are never returned;
      each row keeps its valid positions in order, padded to the longest row."""

    def __init__(self, dim, seq_len, n_summary=8, depth=2, heads=8, dim_head=64, mlp_dim=128, dropout=0.0,
                 summary_init: float = 0.0, summary_only_last: bool = False, drop_masked: bool = False):
        super().__init__()
        self.n_summary = n_summary
        self.summary_only_last, self.drop_masked = summary_only_last, drop_masked
        self.summary = nn.Parameter(torch.full((1, n_summary, dim), float(summary_init)))
        self.pos = nn.Parameter(torch.randn(1, seq_len + n_summary, dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, D); mask: (B, L) bool
        B, L, _ = x.shape
        T = self.n_summary
        x = torch.cat([self.summary.expand(B, -1, -1), x], 1) + self.pos[:, : L + T]  # (B, T+L, D)
        if mask is not None:
            mask = torch.cat([mask.new_ones(B, T), mask], 1)  # (B, T+L)
            if self.drop_masked:
                x, mask = drop_masked_positions(x, mask)  # (B, T+L', D), L' = most valid positions of a row
        if not self.summary_only_last:
            return self.transformer(x, mask)[:, :T]  # (B, T, D)
        *layers, last = self.transformer.layers
        for layer in layers:
            x = layer(x, mask)  # (B, T+L, D)
        return last(x[:, :T], ctx=x, ctx_mask=mask)  # (B, T, D): only the summary queries


def drop_masked_positions(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's valid positions of ``x`` (B, L, D), in order, moved to the front and cut to the longest row:
    (B, L', D) and its mask (B, L'). One host sync (L')."""
    counts = mask.sum(1)  # (B,)
    order = torch.argsort((~mask.bool()).to(torch.uint8), dim=1, stable=True)  # valid positions first, in order
    n = max(1, int(counts.max()))
    order = order[:, :n]  # (B, L')
    x = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))  # (B, L', D)
    return x, torch.arange(n, device=mask.device)[None] < counts[:, None]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass."""
    return _GradReverse.apply(x, scale)


class CrossTransformer(nn.Module):
    """Cross-modal Transformer: a ``target`` sequence attends to a ``source`` sequence, layer by layer.

    One learned token (shared by both sequences) is prepended to each; each sequence gets its own learned
    positional embedding. Every layer is pre-norm ``target + Attn(target, source, source)`` followed by
    ``target + MLP(target)``; the source is not updated. Returns the target states (B, 1 + Lt, D), the
    prepended token first.
    """

    def __init__(self, dim, source_len, target_len, depth, heads=8, dim_head=64, mlp_dim=128, dropout=0.0):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_source = nn.Parameter(torch.randn(1, source_len + 1, dim) * 0.02)
        self.pos_target = nn.Parameter(torch.randn(1, target_len + 1, dim) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))

    def forward(self, source, target, source_mask=None):
        # source: (B, Ls, D); target: (B, Lt, D); source_mask: (B, Ls) bool
        B, Ls, _ = source.shape
        Lt = target.shape[1]
        tok = self.token.expand(B, -1, -1)
        source = torch.cat([tok, source], 1) + self.pos_source[:, : Ls + 1]  # (B, 1+Ls, D)
        target = torch.cat([tok, target], 1) + self.pos_target[:, : Lt + 1]  # (B, 1+Lt, D)
        if source_mask is not None:
            source_mask = torch.cat([source_mask.new_ones(B, 1), source_mask], 1)
        for layer in self.layers:
            target = layer(target, ctx=source, ctx_mask=source_mask)
        return target  # (B, 1+Lt, D)
