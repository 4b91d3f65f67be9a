"""ProMMA step benchmark: one training step (forward + backward) of the adapt stage at CMU-MOSI sizes (text 50x768, audio
375x5, vision 500x20; random tensors, protocol-B corruption at eta 0.7), batched vs a per-sample loop, in one run,
and one evaluation step (batched, no gradients). Prints JSON.

    python benchmarks/bench_promma.py [--batch 64] [--threads 2] [--device auto] [--model promma|mplmm] [--no-amp]

On CUDA every variant runs under the trainer's autocast (``evaluate.amp_dtype``: native bf16, else fp16 with the
loss scaled as the trainer scales it); ``--no-amp`` times fp32.

"batched" is ProMMA's forward: the whole batch at once, every mode in one pass. "loop" does the same computation
one sample at a time, the way MPLMM's code builds each sample's inputs in a Python loop: forward of a batch of 1,
loss / B, backward (gradients accumulate), for each sample. InfoNCE needs in-batch negatives, so the loop has no
InfoNCE term; everything else, the frozen backbone's MME pseudo labels included, runs in both. Model sizes:
``promma_preset("mosi")`` (MPLMM's d = 30, 5 heads, 5 + 5 layers, L_p = 16), randomly initialised, since speed does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's mmsa_core, installed or not
from common import emit, environment, peak_memory_mb, time_it
from mmsa_core import missing
from mmsa_core.data.mmsa import Batch, DataSpec
from mmsa_core.evaluate import amp_dtype, autocast
from mmsa_core.models.promma import PRESET_DATA, ProMMA, promma_preset
from mmsa_core.utils import resolve_device


def random_batch(spec: DataSpec, n: int, device, seed: int = 0) -> Batch:
    """A random batch at ``spec``'s sizes with random valid lengths, corrupted by protocol B (eta 0.7)."""
    g = torch.Generator().manual_seed(seed)
    pos = lambda L: torch.arange(L)[None]  # noqa: E731
    n_tok = torch.randint(spec.text_len // 2, spec.text_len + 1, (n, 1), generator=g)
    ids = torch.randint(1000, 2000, (n, spec.text_len), generator=g)
    ids[:, 0] = 101
    text_mask = (pos(spec.text_len) < n_tok).long()
    ids = torch.where(pos(spec.text_len) == n_tok - 1, torch.full_like(ids, 102), ids) * text_mask
    a_len = torch.randint(spec.audio_len // 2, spec.audio_len + 1, (n, 1), generator=g)
    v_len = torch.randint(spec.vision_len // 2, spec.vision_len + 1, (n, 1), generator=g)
    data = Batch(
        text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids),
        text_feat=torch.randn(n, spec.text_len, spec.text_dim, generator=g) * text_mask[..., None],
        audio=torch.randn(n, spec.audio_len, spec.audio_dim, generator=g), audio_mask=pos(spec.audio_len) < a_len,
        vision=torch.randn(n, spec.vision_len, spec.vision_dim, generator=g), vision_mask=pos(spec.vision_len) < v_len,
        labels=torch.rand(n, generator=g) * 6 - 3, index=torch.arange(n),
    )
    plan = missing.protocol_b(data, 0.7, seed=seed, epoch=0, split="train")
    return missing.apply(data, plan, spec.unk_id).to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="promma", choices=["promma", "mplmm"])
    ap.add_argument("--preset", default="mosi", choices=["mosi", "mosei", "sims"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed batched steps (after one warm-up step)")
    ap.add_argument("--loop-repeats", type=int, default=1,
                    help="timed per-sample-loop steps (no extra warm-up: the batched warm-up ran the same kernels)")
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--attn-dropout", type=float, default=None,
                    help="attention-probability dropout (default: the preset's, 0.1 at MOSI); 0 takes the fused kernel")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = resolve_device(a.device)
    spec = DataSpec(**PRESET_DATA[a.preset])
    cfg = replace(promma_preset(a.preset, baseline=a.model == "mplmm"), attn_dropout=a.attn_dropout)
    model = ProMMA(cfg, spec)
    model.start_adapt()  # the adapt stage: prompts and modules on, frozen stage-1 copy for the MME pseudo labels
    model.to(device).train()
    batch = random_batch(spec, a.batch, device)
    amp = amp_dtype(device, not a.no_amp)  # as the trainer: None on the CPU
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def batched():
        model.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = sum(model(batch).losses.values())
        scaler.scale(loss).backward()

    def loop():
        model.zero_grad(set_to_none=True)
        for i in range(len(batch)):
            with autocast(device, amp):
                out = model(batch.take(torch.tensor([i], device=device)))
            scaler.scale(sum(out.losses.values()) / len(batch)).backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_batched = time_it(batched, device, a.repeats, warmup=1)
    mem_batched = peak_memory_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"batched: median {t_batched['median_s']:.2f} s/step", file=sys.stderr, flush=True)
    t_loop = time_it(loop, device, a.loop_repeats, warmup=0)
    mem_loop = peak_memory_mb(device)
    model.eval()
    with torch.no_grad(), autocast(device, amp):  # evaluation step: one batched forward, no gradients (dropout off)
        t_eval = time_it(lambda: model(batch), device, a.repeats, warmup=1)
    model.train()
    modes = torch.bincount(batch.mode, minlength=7).tolist()
    emit({"benchmark": "promma_train_step", "model": a.model, "preset": a.preset, "batch": a.batch,
          "shapes": {k: v for k, v in PRESET_DATA[a.preset].items()}, "modes_in_batch": modes, **environment(device),
          "batched": {**t_batched, "samples_per_s": a.batch / t_batched["median_s"], "peak_memory_mb": mem_batched},
          "loop": {**t_loop, "samples_per_s": a.batch / t_loop["median_s"], "peak_memory_mb": mem_loop},
          "speedup_batched_vs_loop": t_loop["median_s"] / t_batched["median_s"],
          "eval": {**t_eval, "samples_per_s": a.batch / t_eval["median_s"]},
          "amp": str(amp).replace("torch.", "") if amp else "fp32",
          "attn_dropout": cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout,
          "parameters": sum(p.numel() for p in model.parameters()),
          "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
          "note": "CPU peak memory is the process's peak RSS (monotonic: the loop's figure includes the batched run's)"
          if device.type != "cuda" else "peak GPU memory allocated per variant"})


if __name__ == "__main__":
    main()
