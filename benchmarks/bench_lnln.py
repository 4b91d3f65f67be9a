"""LNLN speed and memory at CMU-MOSI shapes: ours against the authors' protocol and a straightforward variant.

    python benchmarks/bench_lnln.py            # all default variants, full epochs: about 75 min on 2 CPU threads
    python benchmarks/bench_lnln.py --quick    # 3 training + 2 evaluation batches per variant: about 20 min

(Run times estimated from the issue's step times on a 2-core machine, not measured.) Writes the JSON to
``--out`` (default ``mmsa_core/reference/benchmarks/lnln-<cpu|cuda>.json``; ``--out -`` prints only) and prints it.

The model is the authors' MOSI configuration (``lnln_preset("mosi")``, 6,483,012 parameters outside the text
encoder), randomly initialised (speed does not depend on the weights; every variant gets the same weights). The text
encoder is by default a randomly initialised BERT-base-sized BertModel (hidden 768, 12 layers: the paper's cost
without a download); ``--encoder minilm`` uses the packaged all-MiniLM-L6-v2, ``--encoder tiny`` a 2-layer toy BERT.

Variants, each timed in its own child process (so that peak memory is per variant):

- ``authors``: the work the authors' code does: every batch padded to the full lengths (50 / 375 / 500, as their
  loader does), two separate embedding passes (incomplete, then complete), attention as explicit einsum + softmax
  over EVERY position (padding and dropped frames included), fp32. Its predictions differ from ours by design
  (it attends to padding); BERT itself keeps its attention mask and its default attention kernel in every variant.
- ``straightforward``: as ``authors`` but with masked attention (the same function as ours).
- ``ours``: what the MOSI preset runs: training batches grouped by length and the test split evaluated in length
  order (``train.group_by_length``), each modality cut to
  the batch's longest valid length (``trim_padding``), one batched embedding pass in which an unchanged complete row
  is embedded once (``share_unchanged``), masked frames left out of the unimodal embeddings (``drop_masked``), their
  last layers computing only the summary tokens (``summary_only_last``), ``scaled_dot_product_attention``.
- ``ours-ckpt``: ours with activation checkpointing of the text encoder (``checkpoint_text``): memory for time.
- ``ours-bf16``: ours under CPU bf16 autocast (``cpu_bf16``); in the default list only where the CPU has native bf16.
- ``ours-compiled`` (on request): ours under ``torch.compile`` (compilation happens in the untimed warm-up).

Measured per variant, on the embedded dataset at MOSI shapes (``synth --shape mosi``: 1284 training and 686 test
samples whose text, audio and vision lengths vary):

- one training EPOCH (forward + backward + AdamW step over protocol A's training draw, batch ``--batch``) and one
  evaluation of the whole test split at missing rate 0.5 (no-grad forward, batch ``--eval-batch``). With
  ``--quick`` only ``--quick-batches`` training and 2 evaluation batches are timed, chosen evenly spaced in cost
  (longest text) among the epoch's batches; the JSON gives samples/s over the timed batches and the epoch time
  extrapolated from it (``"extrapolated": true``);
- the former per-STEP figures: one training and one evaluation step on a random batch of MOSI shapes at batch 64;
- peak memory, per epoch: the highest of the training epoch's and the evaluation epoch's peaks (on a Linux CPU the
  process's resident high-water mark, reset before each epoch, so the window starts with the data, the model and
  the optimiser state resident; peak allocated memory on CUDA), ``epoch_peak_memory_mb``; and the whole process's
  peak (every phase, the per-step batch included, whose random lengths are not grouped), ``peak_memory_mb``.

Ratios (ours over the other variant, per epoch): ``speedup_train_vs_authors``, ``speedup_eval_vs_authors``,
``memory_ratio_vs_authors`` (epoch peak memory, ours / authors; ``_process``: the whole processes' peaks), the
same ``_vs_straightforward``, and the step ratios
``speedup_train`` / ``speedup_eval`` (straightforward / ours per step, as before). Also recorded: which
scaled-dot-product-attention kernel runs with a mask in training and evaluation (``sdpa_backend``), and whether
the CPU computes bf16 natively.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import emit, environment, peak_memory_mb, reset_peak_memory, sync, time_it, window_peak_memory_mb  # noqa: E402
from mmsa_core import missing  # noqa: E402
from mmsa_core.config import DataConfig  # noqa: E402
from mmsa_core.data import synth  # noqa: E402
from mmsa_core.data.mmsa import Batch, DataSpec  # noqa: E402
from mmsa_core.evaluate import amp_dtype, autocast  # noqa: E402
from mmsa_core.models.layers import Attention  # noqa: E402
from mmsa_core.models.lnln import LNLN, cpu_has_native_bf16, lnln_preset  # noqa: E402
from mmsa_core.models.text import TextEncoderConfig  # noqa: E402
from mmsa_core.train import group_by_length  # noqa: E402
from mmsa_core.utils import resolve_device  # noqa: E402

ENCODERS = {
    "bert-base": TextEncoderConfig(kind="tiny", tiny_hidden=768, tiny_layers=12, tiny_heads=12),  # random init
    "minilm": TextEncoderConfig(kind="pretrained", name_or_path="minilm"),
    "tiny": TextEncoderConfig(kind="tiny"),
}
OURS = dict(trim_padding=True, share_unchanged=True, summary_only_last=True, drop_masked=True)
PLAIN = dict(trim_padding=False, share_unchanged=False, summary_only_last=False, drop_masked=False)
# variant -> (LNLN config switches, attention, embedding passes, length-grouped batches)
VARIANTS = {
    "authors": (PLAIN, "einsum-unmasked", "two", False),
    "straightforward": (PLAIN, "einsum", "two", False),
    "ours": (OURS, "sdpa", "one", True),
    "ours-ckpt": ({**OURS, "checkpoint_text": True}, "sdpa", "one", True),
    "ours-bf16": ({**OURS, "cpu_bf16": True}, "sdpa", "one", True),
    "ours-compiled": (OURS, "sdpa", "one", True),
}
# the targets (speed-ups: at least; memory: at most); evaluation at least as fast per sample as training
TARGETS = {"speedup_train_vs_authors": 2.5, "speedup_eval_vs_authors": 2.0, "memory_ratio_vs_authors": 0.5,
           "eval_vs_train_per_sample": 1.0}
EVAL_RATE = 0.5  # the missing rate of the timed evaluation
SEED = 1111


class EinsumAttention(Attention):
    """The same attention (same parameters) computed as explicit einsum + masked softmax."""

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


class UnmaskedEinsumAttention(EinsumAttention):
    """As the authors: every position is attended to, padding and dropped frames included."""

    def forward(self, q, k, v, key_mask=None):
        return super().forward(q, k, v, None)


class TwoPassLNLN(LNLN):
    """LNLN with two separate embedding passes (incomplete, then complete) instead of one batched pass."""

    def embed_pair(self, batch, complete):
        return self.embed_batch(batch), self.embed_batch(complete)


def build(variant: str, encoder: str, spec: DataSpec) -> LNLN:
    """The variant's model; the same weights for every variant (the switches create no parameters)."""
    switches, attention, passes, _ = VARIANTS[variant]
    torch.manual_seed(0)
    model = LNLN(replace(lnln_preset("mosi"), text=ENCODERS[encoder], **switches), spec)
    if passes == "two":
        model.__class__ = TwoPassLNLN
    if attention != "sdpa":
        cls = EinsumAttention if attention == "einsum" else UnmaskedEinsumAttention
        for m in model.modules():
            if type(m) is Attention:
                m.__class__ = cls
    return model


def mosi_batch(spec: DataSpec, n: int, device, seed: int = 0) -> Batch:
    """Random tensors of ``spec``'s shapes, corrupted by protocol A's training draw (so ``.complete`` is set)."""
    g = torch.Generator().manual_seed(seed)
    pos = lambda L: torch.arange(L)[None, :]  # noqa: E731
    n_tok = torch.randint(min(8, spec.text_len), spec.text_len + 1, (n, 1), generator=g)
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


def pick(batches: list[torch.Tensor], k: int | None, cost) -> list[int]:
    """All batch indices, or ``k`` full batches evenly spaced in ``cost`` (so that the timed ones represent the epoch)."""
    if k is None:
        return list(range(len(batches)))
    full = [i for i, b in enumerate(batches) if len(b) == len(batches[0])]
    ranked = sorted(full, key=cost)
    k = min(k, len(ranked))
    return [ranked[int((i + 0.5) * len(ranked) / k)] for i in range(k)]


def timed_batches(fn, batches, chosen, n_total, device) -> dict:
    """Run ``fn(idx)`` once untimed (warm-up), then on every chosen batch; samples/s and the epoch time."""
    fn(batches[chosen[0]])
    sync(device)
    seconds, samples, per_batch = 0.0, 0, []
    for i in chosen:
        t0 = time.perf_counter()
        fn(batches[i])
        sync(device)
        dt = time.perf_counter() - t0
        seconds, samples = seconds + dt, samples + len(batches[i])
        per_batch.append(dt)
    rate = samples / seconds
    return {"batches_timed": len(chosen), "batches_per_epoch": len(batches), "samples_timed": samples,
            "seconds_timed": seconds, "samples_per_s": rate, "epoch_s": n_total / rate,
            "median_batch_s": sorted(per_batch)[len(per_batch) // 2], "extrapolated": len(chosen) < len(batches)}


def child(a) -> dict:
    """Measure one variant in this process and return its figures."""
    from mmsa_core.experiment import load_dataset

    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    ds = load_dataset(DataConfig(dataset="synth", synth_shape=a.shape))
    spec = ds.spec
    model = build(a.variant, a.encoder, spec).to(device)
    fwd = torch.compile(model) if a.variant == "ours-compiled" else model
    amp = device.type == "cuda" and not a.no_amp
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype(device) == torch.float16)  # as the trainer

    def train_step(batch):
        model.train()
        with autocast(device, amp):
            loss = sum(fwd(batch).losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def eval_step(batch):
        model.eval()
        with autocast(device, amp):
            fwd(batch)

    train, test = ds["train"].data.to(device), ds["test"].data.to(device)
    test_plan = missing.draw("A", test, EVAL_RATE, 0, 0, "test")

    def test_batch(idx):
        return missing.apply(test.take(idx), test_plan.take(idx.cpu()), spec.unk_id).with_(complete=None)

    # the function each variant computes (same weights, before any training step): the first test batch
    first = torch.arange(min(a.eval_batch, len(test)), device=device)
    model.eval()
    with torch.no_grad():
        pred = model(test_batch(first)).pred.float().cpu()

    # per epoch: the training split in the trainer's order (grouped by length for ours), then the test split
    k = a.quick_batches if a.quick else None
    order = torch.randperm(len(train), generator=missing.generator("order", SEED, 0)).to(device)
    if VARIANTS[a.variant][3]:
        order = group_by_length(order, train, a.batch, missing.generator("group", SEED, 0))
    plan = missing.draw("A", train, None, SEED, 0, "train")
    train_batches = list(order.split(a.batch))
    tlen = train.text_mask.sum(1)
    chosen = pick(train_batches, k, lambda i: int(tlen[train_batches[i]].max()))
    windowed = reset_peak_memory(device)
    epoch_train = timed_batches(lambda idx: train_step(missing.apply(train.take(idx), plan.take(idx.cpu()), spec.unk_id)),
                                train_batches, chosen, len(train), device)
    epoch_train["peak_memory_mb"] = window_peak_memory_mb(device) if windowed else None
    # predict()'s order: the split's own, or sorted by length where the variant groups (train.group_by_length)
    test_order = torch.sort(test.length_key(), stable=True).indices if VARIANTS[a.variant][3] \
        else torch.arange(len(test), device=device)
    test_batches = list(test_order.split(a.eval_batch))
    elen = test.text_mask.sum(1)
    chosen = pick(test_batches, 2 if a.quick else None, lambda i: int(elen[test_batches[i]].max()))
    windowed = reset_peak_memory(device)
    epoch_eval = timed_batches(lambda idx: eval_step(test_batch(idx)), test_batches, chosen, len(test), device)
    epoch_eval["peak_memory_mb"] = window_peak_memory_mb(device) if windowed else None

    # per step (after the epochs): a random batch of MOSI shapes, as in the former benchmark; its batch is not
    # grouped by length, so its text, audio and vision are near their full lengths
    batch = mosi_batch(spec, a.batch, device)
    eval_batch = batch.with_(complete=None)
    t_eval = time_it(lambda: eval_step(eval_batch), device, a.repeats, a.warmup)
    t_train = time_it(lambda: train_step(batch), device, a.repeats, a.warmup)

    return {"variant": a.variant, "train_step": t_train, "eval_step": t_eval,
            "train_samples_per_s": a.batch / t_train["median_s"], "eval_samples_per_s": a.batch / t_eval["median_s"],
            "epoch": {"train": epoch_train, "eval": epoch_eval},
            "peak_memory_mb": peak_memory_mb(device), "pred": pred.tolist(),
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_outside_text_encoder": model.num_params(), "n_train": len(train), "n_test": len(test),
            **environment(device)}


def sdpa_backends(device) -> dict:
    """The aten kernels behind ``scaled_dot_product_attention`` with a key mask, in training and evaluation,
    at the vision sequence's length (508 = 8 summary tokens + 500 frames)."""
    from torch.profiler import ProfilerActivity, profile

    attn = Attention(128, 8, 64).to(device)
    x = torch.randn(2, 508, 128, device=device)
    mask = torch.arange(508, device=device)[None] < torch.tensor([[508], [300]], device=device)
    out = {}
    for phase, grad in (("train", True), ("eval", False)):
        attn.train(grad)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.set_grad_enabled(grad), profile(activities=acts) as prof:
            y = attn(x, x, x, mask)
            if grad:
                y.sum().backward()
        out[phase] = sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key or "_efficient_attention" in e.key
                             or "flash" in e.key})
    return out


def epoch_peak_mb(r: dict) -> float:
    """A variant's peak memory over its training epoch and its evaluation epoch (the process peak where the
    platform cannot window it)."""
    peaks = [r["epoch"][phase].get("peak_memory_mb") for phase in ("train", "eval")]
    return max(peaks) if None not in peaks else r["peak_memory_mb"]


def ratio(results, key_fn, num: str, den: str):
    return key_fn(results[num]) / key_fn(results[den]) if num in results and den in results else None


def summary(a, results: dict, device) -> dict:
    first = results[next(iter(results))]
    report = {"benchmark": "lnln_step", "shapes": a.shape, "batch": a.batch, "eval_batch": a.eval_batch,
              "encoder": a.encoder, "repeats": a.repeats, "quick": a.quick,
              "data": f"synth --shape {a.shape}: {first['n_train']} training, {first['n_test']} test samples; "
                      f"evaluation at missing rate {EVAL_RATE}",
              "variants": list(results), "cpu_native_bf16": cpu_has_native_bf16(), "sdpa_backend": sdpa_backends(device),
              "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},  # glibc tunables
              **{k: first[k] for k in ("device", "threads", "torch", "params_total", "params_outside_text_encoder")}}
    for v, r in results.items():
        report[v] = {k: r[k] for k in ("train_step", "eval_step", "train_samples_per_s", "eval_samples_per_s",
                                       "epoch", "peak_memory_mb")}
        report[v]["epoch_peak_memory_mb"] = epoch_peak_mb(r)
    train_rate = lambda r: r["epoch"]["train"]["samples_per_s"]  # noqa: E731
    eval_rate = lambda r: r["epoch"]["eval"]["samples_per_s"]  # noqa: E731
    memory = epoch_peak_mb
    for other in ("authors", "straightforward"):
        report[f"speedup_train_vs_{other}"] = ratio(results, train_rate, "ours", other)
        report[f"speedup_eval_vs_{other}"] = ratio(results, eval_rate, "ours", other)
        report[f"memory_ratio_vs_{other}"] = ratio(results, memory, "ours", other)
        report[f"memory_ratio_vs_{other}_process"] = ratio(results, lambda r: r["peak_memory_mb"], "ours", other)
    report["step_speedup_train_vs_authors"] = ratio(results, lambda r: 1 / r["train_step"]["median_s"], "ours", "authors")
    report["step_speedup_eval_vs_authors"] = ratio(results, lambda r: 1 / r["eval_step"]["median_s"], "ours", "authors")
    if "straightforward" in results and "ours" in results:  # the former step ratios (straightforward / ours)
        report["speedup_train"] = ratio(results, lambda r: 1 / r["train_step"]["median_s"], "ours", "straightforward")
        report["speedup_eval"] = ratio(results, lambda r: 1 / r["eval_step"]["median_s"], "ours", "straightforward")
    if "ours" in results:  # evaluation against training, per sample, both per epoch
        report["eval_vs_train_per_sample"] = eval_rate(results["ours"]) / train_rate(results["ours"])
    if "ours-ckpt" in results:
        report["memory_ratio_vs_authors_ckpt"] = ratio(results, memory, "ours-ckpt", "authors")
        report["memory_ratio_ckpt_vs_ours"] = ratio(results, memory, "ours-ckpt", "ours")
        report["time_ratio_ckpt_vs_ours"] = ratio(results, train_rate, "ours", "ours-ckpt")  # > 1: checkpointing is slower
    if "ours-compiled" in results:
        report["speedup_train_vs_authors_compiled"] = ratio(results, train_rate, "ours-compiled", "authors")
        report["speedup_eval_vs_authors_compiled"] = ratio(results, eval_rate, "ours-compiled", "authors")
        if "straightforward" in results:
            report["speedup_train_compiled"] = ratio(results, lambda r: 1 / r["train_step"]["median_s"], "ours-compiled", "straightforward")
            report["speedup_eval_compiled"] = ratio(results, lambda r: 1 / r["eval_step"]["median_s"], "ours-compiled", "straightforward")
    if "ours-bf16" in results:
        report["speedup_train_vs_authors_bf16"] = ratio(results, train_rate, "ours-bf16", "authors")
        report["speedup_train_bf16_vs_ours"] = ratio(results, train_rate, "ours-bf16", "ours")
    diff = lambda x, y: max(abs(p - q) for p, q in zip(results[x]["pred"], results[y]["pred"]))  # noqa: E731
    if "ours" in results:
        for other, key in (("straightforward", "max_abs_pred_diff"), ("authors", "max_abs_pred_diff_vs_authors"),
                           ("ours-bf16", "max_abs_pred_diff_bf16"), ("ours-ckpt", "max_abs_pred_diff_ckpt"),
                           ("ours-compiled", "max_abs_pred_diff_compiled")):
            if other in results:
                report[key] = diff("ours", other)
    report["targets"] = TARGETS
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time --quick-batches training and 2 evaluation batches "
                    "per variant and extrapolate to the epoch; steps timed once")
    ap.add_argument("--quick-batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--encoder", default="bert-base", choices=sorted(ENCODERS))
    ap.add_argument("--shape", default="mosi", choices=sorted(synth.SHAPES), help="synth data shape (small: tests)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats of each step (default 2; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join(VARIANTS)} (default: authors, straightforward, ours, "
                         "ours-ckpt, and ours-bf16 where the CPU has native bf16)")
    ap.add_argument("--out", default=None, help="JSON file (default mmsa_core/reference/benchmarks/lnln-<cpu|cuda>.json; - : print only)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child processes
    a = ap.parse_args()
    a.repeats = a.repeats or (1 if a.quick else 2)
    if a.variant:
        print(json.dumps(child(a)))
        return
    device = resolve_device(a.device)
    bf16_native = device.type == "cpu" and cpu_has_native_bf16()
    default = ["authors", "straightforward", "ours", "ours-ckpt"] + (["ours-bf16"] if bf16_native else [])
    variants = a.variants.split(",") if a.variants else default
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    if "ours-bf16" in variants and not bf16_native:
        sys.exit("variant ours-bf16: CPU bf16 autocast needs a CPU with native bf16 (AVX512-BF16 or AMX); "
                 f"this {'is a GPU run (AMP is on by default)' if device.type != 'cpu' else 'CPU has neither'}")
    t0 = time.perf_counter()
    synth.ensure(a.shape)  # generated once, before the children read it
    results, wall = {}, {}
    for v in variants:
        t_v = time.perf_counter()
        cmd = [sys.executable, __file__, "--variant", v, "--batch", str(a.batch), "--eval-batch", str(a.eval_batch),
               "--encoder", a.encoder, "--shape", a.shape, "--repeats", str(a.repeats), "--warmup", str(a.warmup),
               "--threads", str(a.threads), "--device", a.device, "--quick-batches", str(a.quick_batches)]
        cmd += (["--no-amp"] if a.no_amp else []) + (["--quick"] if a.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"variant {v} failed:\n{out.stderr[-3000:]}")
        results[v] = json.loads(out.stdout.strip().splitlines()[-1])
        wall[v] = round(time.perf_counter() - t_v, 1)
        print(f"{v}: done in {wall[v]} s", file=sys.stderr)
    report = summary(a, results, device)
    report["wall_s"] = {"total": round(time.perf_counter() - t0, 1), **wall}  # what the run took, per child
    if a.out != "-":
        path = Path(a.out or Path(__file__).resolve().parent.parent / "mmsa_core" / "reference" / "benchmarks" / f"lnln-{device.type}.json")
        path.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    emit(report)


if __name__ == "__main__":
    main()
