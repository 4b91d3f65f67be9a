"""Views of the LNLN benchmark JSON for the performance appendix (``book/10_performance.ipynb``): the ratios
against the authors' protocol with their targets, and the per-epoch figures of every variant. Every figure is
read from the files that ``benchmarks/bench_lnln.py`` writes; nothing is typed in.

    import sys; sys.path.insert(0, "benchmarks")
    from mmsa_core import book
    from bench_tables import lnln_epochs, lnln_ratios
    lnln_ratios(book.benchmark_files())
"""

from __future__ import annotations

import pandas as pd

# key -> what the ratio is; its target, if any, is the file's own ("targets", set by bench_lnln.py). Memory and
# time ratios are ceilings (lower is better), the others floors.
RATIOS = {
    "speedup_train_vs_authors": "training epoch, samples/s: ours / authors' protocol",
    "speedup_eval_vs_authors": "evaluation of the test split, samples/s: ours / authors' protocol",
    "memory_ratio_vs_authors": "peak memory: ours / authors' protocol",
    "memory_ratio_vs_authors_ckpt": "peak memory: ours with text-encoder checkpointing / authors' protocol",
    "speedup_train_vs_straightforward": "training epoch, samples/s: ours / straightforward",
    "speedup_eval_vs_straightforward": "evaluation, samples/s: ours / straightforward",
    "memory_ratio_vs_straightforward": "peak memory: ours / straightforward",
    "step_speedup_train_vs_authors": "training step (random batch of MOSI shapes): ours / authors' protocol",
    "step_speedup_eval_vs_authors": "evaluation step (random batch of MOSI shapes): ours / authors' protocol",
    "time_ratio_ckpt_vs_ours": "training time: with text-encoder checkpointing / without",
    "speedup_train_vs_authors_bf16": "training epoch: ours in CPU bf16 / authors' protocol",
    "speedup_train_vs_authors_compiled": "training epoch: ours under torch.compile / authors' protocol",
    "eval_vs_train_per_sample": "ours: evaluation samples/s / training samples/s",
}


def is_ceiling(key: str) -> bool:
    return key.startswith(("memory_ratio", "time_ratio"))


def lnln_ratios(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """One row per ratio of every ``bench_lnln.py`` file that measured the authors' protocol: the value, its
    target (a floor for speed-ups, a ceiling for memory), whether it is met, and whether it was extrapolated."""
    rows = []
    for f, r in files:
        if r.get("benchmark") != "lnln_step" or r.get("speedup_train_vs_authors") is None:
            continue
        for key, what in RATIOS.items():
            if r.get(key) is None:
                continue
            target, ceiling = r.get("targets", {}).get(key), is_ceiling(key)
            met = None if target is None else bool(r[key] <= target if ceiling else r[key] >= target)
            rows.append({"file": f, "ratio": what, "key": key, "measured": round(float(r[key]), 3),
                         "target": None if target is None else ("at most " if ceiling else "at least ") + f"{target:g}",
                         "met": met, "quick (extrapolated)": bool(r.get("quick")), "encoder": r.get("encoder")})
    return pd.DataFrame(rows, columns=["file", "ratio", "key", "measured", "target", "met", "quick (extrapolated)",
                                       "encoder"])


def lnln_epochs(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """Per file and variant: one training epoch and one evaluation of the test split (samples/s, seconds), and the
    variant's peak memory."""
    rows = []
    for f, r in files:
        if r.get("benchmark") != "lnln_step":
            continue
        for v in r.get("variants", []):
            e = r[v].get("epoch")
            if e is None:
                continue
            rows.append({"file": f, "variant": v, "train samples/s": e["train"]["samples_per_s"],
                         "train epoch s": e["train"]["epoch_s"], "eval samples/s": e["eval"]["samples_per_s"],
                         "eval of test split s": e["eval"]["epoch_s"], "peak memory (MB)": r[v]["peak_memory_mb"],
                         "batches timed": f"{e['train']['batches_timed']}/{e['train']['batches_per_epoch']}",
                         "extrapolated": e["train"]["extrapolated"], "device": r.get("device")})
    df = pd.DataFrame(rows)
    if not df.empty:
        for c, d in (("train samples/s", 2), ("train epoch s", 0), ("eval samples/s", 1), ("eval of test split s", 0),
                     ("peak memory (MB)", 0)):
            df[c] = pd.to_numeric(df[c]).round(d)
        df = df.set_index(["file", "variant"])
    return df
