"""LNLN step-time benchmark at CMU-MOSI shapes: one training step and one evaluation step. Prints JSON.

    python benchmarks/bench_lnln.py [--batch 64] [--encoder bert-base|minilm|tiny] [--repeats 2] [--threads 2]

The model is the authors' MOSI configuration (``lnln_preset("mosi")``, 6,483,012 parameters outside the text
encoder) with randomly initialised weights; speed does not depend on the weights. The text encoder is by default
a randomly initialised BERT-base-sized BertModel (hidden 768, 12 layers: the paper's cost without a download);
``--encoder minilm`` uses the packaged all-MiniLM-L6-v2, ``--encoder tiny`` a 2-layer toy BERT.

The batch is random tensors of MOSI shapes (text 50 tokens, audio 375 x 5, vision 500 x 20), corrupted by
protocol A's training draw, so that the complete input rides along as in training. Two variants of the SAME
architecture and weights are timed, each in its own child process (so that peak memory is per variant):

- ``ours``: the complete and incomplete inputs through the text encoder and embedding networks in ONE batched
  pass; attention with ``scaled_dot_product_attention``.
- ``straightforward``: two separate passes (incomplete, then complete), as the authors' code does, and attention
  as explicit matmul + softmax (einsum style).
- ``ours-compiled`` (on request, ``--variants``): ``ours`` under ``torch.compile`` (what ``train.compile=true`` does);
  compilation happens in the warm-up steps, which are not timed.

Training step = forward + backward + AdamW step (AMP bf16/fp16 on CUDA); evaluation step = a no-grad forward over
the incomplete input (evaluation never embeds the complete input, in both variants).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import emit, environment, peak_memory_mb, time_it  # noqa: E402
from mmsa_core import missing  # noqa: E402
from mmsa_core.data.mmsa import Batch  # noqa: E402
from mmsa_core.evaluate import amp_dtype, autocast  # noqa: E402
from mmsa_core.models.layers import Attention  # noqa: E402
from mmsa_core.models.lnln import LNLN, PAPER_SPECS, lnln_preset  # noqa: E402
from mmsa_core.models.text import TextEncoderConfig  # noqa: E402
from mmsa_core.utils import resolve_device  # noqa: E402

ENCODERS = {
    "bert-base": TextEncoderConfig(kind="tiny", tiny_hidden=768, tiny_layers=12, tiny_heads=12),  # random init
    "minilm": TextEncoderConfig(kind="pretrained", name_or_path="minilm"),
    "tiny": TextEncoderConfig(kind="tiny"),
}


class EinsumAttention(Attention):
    """The same attention (same parameters) computed as explicit matmul + masked softmax."""

    def forward(self, q, k, v, key_mask=None):
        B, Lq, _ = q.shape
        Lk = k.shape[1]
        q = self.to_q(self.norm_q(q)).view(B, Lq, self.heads, -1).transpose(1, 2)  # (B, H, Lq, dh)
        k = self.to_k(self.norm_k(k)).view(B, Lk, self.heads, -1).transpose(1, 2)
        v = self.to_v(self.norm_v(v)).view(B, Lk, self.heads, -1).transpose(1, 2)
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5  # (B, H, Lq, Lk)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
        return self.to_out(out.transpose(1, 2).reshape(B, Lq, -1))


class StraightforwardLNLN(LNLN):
    """LNLN with two separate embedding passes (incomplete, then complete) instead of one batched pass."""

    def embed_pair(self, batch, complete):
        return self.embed_batch(batch), self.embed_batch(complete)


def straightforward(model: LNLN) -> LNLN:
    model.__class__ = StraightforwardLNLN
    for m in model.modules():
        if type(m) is Attention:
            m.__class__ = EinsumAttention
    return model


def mosi_batch(n: int, device, seed: int = 0) -> Batch:
    """Random tensors of MOSI shapes, corrupted by protocol A's training draw (so ``.complete`` is set)."""
    spec = PAPER_SPECS["mosi"]
    g = torch.Generator().manual_seed(seed)
    pos = lambda L: torch.arange(L)[None, :]  # noqa: E731
    n_tok = torch.randint(8, spec.text_len + 1, (n, 1), generator=g)
    ids = torch.randint(1000, 30000, (n, spec.text_len), generator=g)
    ids[:, 0] = 101
    ids = torch.where(pos(spec.text_len) == n_tok - 1, torch.full_like(ids, 102), ids)
    text_mask = (pos(spec.text_len) < n_tok).long()
    a_len = torch.randint(spec.audio_len // 2, spec.audio_len + 1, (n, 1), generator=g)
    v_len = torch.randint(spec.vision_len // 2, spec.vision_len + 1, (n, 1), generator=g)
    data = Batch(
        text_ids=ids * text_mask, text_mask=text_mask, text_segment=torch.zeros_like(ids),
        text_feat=torch.randn(n, spec.text_len, spec.text_dim, generator=g),
        audio=torch.randn(n, spec.audio_len, spec.audio_dim, generator=g),
        audio_mask=pos(spec.audio_len) < a_len,
        vision=torch.randn(n, spec.vision_len, spec.vision_dim, generator=g),
        vision_mask=pos(spec.vision_len) < v_len,
        labels=torch.empty(n).uniform_(-3, 3, generator=g), index=torch.arange(n),
    )
    plan = missing.protocol_a(data, None, seed, 0, "train")
    return missing.apply(data.to(device), plan, spec.unk_id)


def child(a) -> dict:
    """Time one variant in this process and return its measurements."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = resolve_device(a.device)
    cfg = replace(lnln_preset("mosi"), text=ENCODERS[a.encoder])
    model = LNLN(cfg, PAPER_SPECS["mosi"])
    if a.variant == "straightforward":
        model = straightforward(model)
    model.to(device)
    fwd = model
    if a.variant == "ours-compiled":  # what train.compile=true does; compilation happens in the warm-up steps
        fwd = torch.compile(model)
    batch = mosi_batch(a.batch, device)
    amp = device.type == "cuda" and not a.no_amp
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype(device) == torch.float16)  # as the trainer

    def train_step():
        model.train()
        with autocast(device, amp):
            loss = sum(fwd(batch).losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    eval_batch = batch.with_(complete=None)

    @torch.no_grad()
    def eval_step():
        model.eval()
        with autocast(device, amp):
            fwd(eval_batch)

    # the function both variants must compute (same seed, same weights, before any training step)
    model.eval()
    with torch.no_grad():
        pred = model(eval_batch).pred.float().cpu()
    t_eval = time_it(eval_step, device, a.repeats, a.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_train = time_it(train_step, device, a.repeats, a.warmup)
    return {"variant": a.variant, "train_step": t_train, "eval_step": t_eval,
            "train_samples_per_s": a.batch / t_train["median_s"], "eval_samples_per_s": a.batch / t_eval["median_s"],
            "peak_memory_mb": peak_memory_mb(device), "pred": pred.tolist(),
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_outside_text_encoder": model.num_params(), **environment(device)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--encoder", default="bert-base", choices=sorted(ENCODERS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--variants", default="ours,straightforward",
                    help="comma-separated: ours, straightforward, ours-compiled (ours under torch.compile)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child processes
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(child(a)))
        return
    results = {}
    for v in a.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", v, "--batch", str(a.batch), "--encoder", a.encoder,
               "--repeats", str(a.repeats), "--warmup", str(a.warmup), "--threads", str(a.threads),
               "--device", a.device] + (["--no-amp"] if a.no_amp else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"variant {v} failed:\n{out.stderr[-3000:]}")
        results[v] = json.loads(out.stdout.strip().splitlines()[-1])
    report = {"benchmark": "lnln_step", "shapes": "mosi", "batch": a.batch, "encoder": a.encoder,
              "repeats": a.repeats, **{k: results[next(iter(results))][k] for k in
                                       ("device", "threads", "torch", "params_total", "params_outside_text_encoder")}}
    for v, r in results.items():
        report[v] = {k: r[k] for k in ("train_step", "eval_step", "train_samples_per_s", "eval_samples_per_s",
                                       "peak_memory_mb")}
    if "ours" in results and "straightforward" in results:
        o, s = results["ours"], results["straightforward"]
        report["speedup_train"] = s["train_step"]["median_s"] / o["train_step"]["median_s"]
        report["speedup_eval"] = s["eval_step"]["median_s"] / o["eval_step"]["median_s"]
        report["max_abs_pred_diff"] = max(abs(x - y) for x, y in zip(o["pred"], s["pred"]))
    if "ours-compiled" in results and "straightforward" in results:
        c, s = results["ours-compiled"], results["straightforward"]
        report["speedup_train_compiled"] = s["train_step"]["median_s"] / c["train_step"]["median_s"]
        report["speedup_eval_compiled"] = s["eval_step"]["median_s"] / c["eval_step"]["median_s"]
    emit(report)


if __name__ == "__main__":
    main()
