"""The benchmark figures of the performance appendix (chapter 10), read from the JSON files that the scripts in
``benchmarks/`` print. The figures measured for the book ship with the package, in :data:`BENCHMARK_RESULTS`
(``mmsa_core/reference/benchmarks/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .runs import PACKAGE

# the committed benchmark files (package data), e.g. `python benchmarks/bench_sweep.py > <this folder>/sweep-cpu.json`
BENCHMARK_RESULTS = PACKAGE / "reference" / "benchmarks"


def benchmark_files(folder: str | Path | None = None) -> list[tuple[str, dict]]:
    """(file name, parsed JSON) of every benchmark file in ``folder`` (default :data:`BENCHMARK_RESULTS`, the
    figures measured for the book), as the scripts in ``benchmarks/`` print them."""
    folder = Path(folder).expanduser() if folder is not None else BENCHMARK_RESULTS
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no benchmark JSON files (run the scripts in benchmarks/, see the README)")
    return [(f.name, json.loads(f.read_text())) for f in files]


def benchmark_table(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """One row per timed step of :func:`benchmark_files`: the median and spread (inter-quartile range) over the
    repeated steps, samples/s, peak memory and where it ran. Every figure is read from the files."""
    rows = []

    def add(f, r, what, t, per_s, mem):
        rows.append({"file": f, "step": what, "median s": t["median_s"], "IQR s": t.get("iqr_s"),
                     "repeats": t.get("repeats"), "samples/s": per_s, "peak memory (MB)": mem,
                     "device": r.get("device"), "threads": r.get("threads"), "torch": r.get("torch")})

    for f, r in files:
        kind = r.get("benchmark")
        if kind == "lnln_step":
            for v in ("ours", "ours-compiled", "straightforward"):
                if v in r:
                    enc = r.get("encoder", "bert-base")
                    add(f, r, f"LNLN train, {v} ({enc})", r[v]["train_step"], r[v]["train_samples_per_s"], r[v]["peak_memory_mb"])
                    add(f, r, f"LNLN eval, {v} ({enc})", r[v]["eval_step"], r[v]["eval_samples_per_s"], r[v]["peak_memory_mb"])
        elif kind == "promma_train_step":
            tag = f"{r['model']}, attention dropout {r.get('attn_dropout', 'preset')}"
            add(f, r, f"ProMMA train, batched ({tag})", r["batched"], r["batched"]["samples_per_s"], r["batched"]["peak_memory_mb"])
            add(f, r, f"ProMMA train, per-sample loop ({tag})", r["loop"], r["loop"]["samples_per_s"], r["loop"]["peak_memory_mb"])
            if "eval" in r:
                add(f, r, f"ProMMA eval, batched ({tag})", r["eval"], r["eval"]["samples_per_s"], None)
        elif kind == "sweep":
            add(f, r, f"sweep of {r['settings']} settings ({r['model']}, protocol {r['protocol']})", r["sweep"],
                r["samples_per_s"], r["peak_memory_mb"])
        elif kind == "text_path":
            for run in r["runs"]:
                add(f, r, f"chapter run of {run['model']} ({run['epochs']} epochs + both sweeps), text: {run['text']}",
                    {"median_s": run["wall_s"], "repeats": 1}, None, None)
        elif kind == "data":
            add(f, r, f"epoch of corrupted batches ({r['shape']} shapes)", r["epoch_of_corrupted_batches"],
                r["samples_per_s"], r["peak_memory_mb"])
        else:
            raise ValueError(f"{f}: unknown benchmark {kind!r}")
    df = pd.DataFrame(rows).set_index(["file", "step"])
    for c, d in (("median s", 3), ("IQR s", 3), ("samples/s", 1), ("peak memory (MB)", 0)):
        df[c] = pd.to_numeric(df[c]).round(d)
    return df


def speedups(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """The ratios the performance targets name, from :func:`benchmark_files`: LNLN ours vs straightforward (train
    and eval step) and ProMMA batched vs per-sample loop (train step)."""
    rows = []
    for f, r in files:
        if r.get("benchmark") == "lnln_step":
            enc = f" ({r['encoder']} text encoder)"
            for key, what, target in (("speedup_train", "train step: straightforward / ours", 2.0),
                                      ("speedup_eval", "eval step: straightforward / ours", None),
                                      ("speedup_train_compiled", "train step: straightforward / ours under torch.compile", 2.0),
                                      ("speedup_eval_compiled", "eval step: straightforward / ours under torch.compile", None)):
                if key in r:  # the target is set at the papers' sizes: BERT-base
                    rows.append({"file": f, "ratio": f"LNLN {what}{enc}", "measured": r[key],
                                 "target": target if r["encoder"] == "bert-base" else None})
        elif r.get("benchmark") == "promma_train_step":
            rows.append({"file": f, "ratio": f"ProMMA train step: loop / batched (attention dropout {r.get('attn_dropout', 'preset')})",
                         "measured": r["speedup_batched_vs_loop"], "target": 10.0})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["measured"] = df["measured"].round(2)
        df["met"] = [None if pd.isna(t) else bool(m >= t) for m, t in zip(df["measured"], df["target"])]
    return df


# ------------------------------------------------------------------- LNLN against the authors' protocol
# key -> what the ratio is; its target, if any, is the file's own ("targets", set by bench_lnln.py). Memory and
# time ratios are ceilings (lower is better), the others floors.
RATIOS = {
    "speedup_train_vs_authors": "training epoch, samples/s: ours / authors' protocol",
    "speedup_eval_vs_authors": "evaluation of the test split, samples/s: ours / authors' protocol",
    "memory_ratio_vs_authors": "peak memory over the training and evaluation epochs: ours / authors' protocol",
    "memory_ratio_vs_authors_process": "peak memory of the whole process (per-step batch included): ours / authors' protocol",
    "memory_ratio_vs_authors_ckpt": "epoch peak memory: ours with text-encoder checkpointing / authors' protocol",
    "speedup_train_vs_straightforward": "training epoch, samples/s: ours / straightforward",
    "speedup_eval_vs_straightforward": "evaluation, samples/s: ours / straightforward",
    "memory_ratio_vs_straightforward": "peak memory over the training and evaluation epochs: ours / straightforward",
    "step_speedup_train_vs_authors": "training step (random batch of MOSI shapes): ours / authors' protocol",
    "step_speedup_eval_vs_authors": "evaluation step (random batch of MOSI shapes): ours / authors' protocol",
    "time_ratio_ckpt_vs_ours": "training time: with text-encoder checkpointing / without",
    "speedup_train_vs_authors_bf16": "training epoch: ours in CPU bf16 / authors' protocol",
    "speedup_train_bf16_vs_ours": "training epoch: ours in CPU bf16 / ours in fp32",
    "speedup_train_vs_authors_compiled": "training epoch: ours under torch.compile / authors' protocol",
    "eval_vs_train_per_sample": "ours: evaluation samples/s / training samples/s",
}


def is_ceiling(key: str) -> bool:
    return key.startswith(("memory_ratio", "time_ratio"))


def lnln_ratios(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """One row per ratio of every ``bench_lnln.py`` file that measured one of :data:`RATIOS`: the value, its
    target (a floor for speed-ups, a ceiling for memory), whether it is met, and whether it was extrapolated."""
    rows = []
    for f, r in files:
        if r.get("benchmark") != "lnln_step" or all(r.get(k) is None for k in RATIOS):
            continue
        windowed = "memory_ratio_vs_authors_process" in r  # older files measured only the whole process's peak
        for key, what in RATIOS.items():
            if r.get(key) is None:
                continue
            if key.startswith("memory_ratio") and not windowed:  # "<measure>: <ratio>", the measure replaced
                what = "peak memory of the whole process: " + what.split(": ", 1)[1]
            target, ceiling = r.get("targets", {}).get(key), is_ceiling(key)
            met = None if target is None else bool(r[key] <= target if ceiling else r[key] >= target)
            rows.append({"file": f, "ratio": what, "key": key, "measured": round(float(r[key]), 3),
                         "target": None if target is None else ("at most " if ceiling else "at least ") + f"{target:g}",
                         "met": met, "quick (extrapolated)": bool(r.get("quick")), "encoder": r.get("encoder")})
    return pd.DataFrame(rows, columns=["file", "ratio", "key", "measured", "target", "met", "quick (extrapolated)",
                                       "encoder"])


def lnln_epochs(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """Per file and variant: one training epoch and one evaluation of the test split (samples/s, seconds), and the
    variant's peak memory over those two epochs (where the file has it) and over its whole process."""
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
                         "eval of test split s": e["eval"]["epoch_s"],
                         "epoch peak memory (MB)": r[v].get("epoch_peak_memory_mb"),
                         "process peak memory (MB)": r[v]["peak_memory_mb"],
                         "batches timed": f"{e['train']['batches_timed']}/{e['train']['batches_per_epoch']}",
                         "extrapolated": e["train"]["extrapolated"], "device": r.get("device")})
    df = pd.DataFrame(rows)
    if not df.empty:
        for c, d in (("train samples/s", 2), ("train epoch s", 0), ("eval samples/s", 1), ("eval of test split s", 0),
                     ("epoch peak memory (MB)", 0), ("process peak memory (MB)", 0)):
            df[c] = pd.to_numeric(df[c]).round(d)
        df = df.set_index(["file", "variant"])
    return df


def text_paths(files: list[tuple[str, dict]]) -> pd.DataFrame:
    """Per ``bench_text.py`` run: a chapter's default run with the pickle's MiniLM states (``features``) or with the
    token ids read by a frozen MiniLM, its wall time against the features run, what the encoder cache served, and
    the test MAE and Acc-2 averaged over protocol A's rates. The runs are in the order they ran in one process."""
    rows = []
    for f, r in files:
        if r.get("benchmark") != "text_path":
            continue
        for run in r["runs"]:
            rows.append({"file": f, "model": run["model"], "text": run["text"], "wall s": run["wall_s"],
                         "time / features": run["time_ratio_vs_features"], "cache hits": run["cache_hits"],
                         "cache misses": run["cache_misses"], "MAE (A, mean)": run["test_MAE_protocol_A_mean"],
                         "Acc-2 (A, mean)": round(100 * run["test_Acc2_protocol_A_mean"], 2)})
    return pd.DataFrame(rows).set_index(["file", "model", "text"]) if rows else pd.DataFrame(rows)


__all__ = ["lnln_epochs", "text_paths", "lnln_ratios", "BENCHMARK_RESULTS", "benchmark_files", "benchmark_table", "speedups"]
