"""What reading the words through a frozen MiniLM costs a chapter, against the pickle's precomputed states.

    python benchmarks/bench_text.py [--models lnln,promma,baseline] [--epochs N] [--no-cache]

Trains and tests each model's embedded-default preset (the run a chapter makes: ``book.config``, one thread, the
full sweep of both protocols afterwards) twice: with the ``features`` text path (the pickle's MiniLM states, a
dropped token's state zeroed while its neighbours keep it in context) and with the token ids read by the packaged
MiniLM, frozen (``text.kind=pretrained, name_or_path=minilm, finetune=false``: a dropped token becomes ``[UNK]``
inside the encoder). The MiniLM runs go one after another in one process, as a grid's cells do, so that later
models read the sentences that earlier ones encoded from the cache (``FrozenStates``); per run the JSON gives the
wall time, the cache's hits and misses, and the test MAE and Acc-2 averaged over protocol A's rates. Prints JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from common import emit, environment, peak_memory_mb
from mmsa_core import book
from mmsa_core.experiment import run
from mmsa_core.models.text import frozen_states

MINILM = {"kind": "pretrained", "name_or_path": "minilm", "finetune": False}  # what the default presets read
FEATURES = {"kind": "features"}  # the pickle's precomputed states, set explicitly: the presets no longer read them


def one_run(model: str, text: dict, epochs: int | None, folder: str) -> dict:
    cfg = book.config(model, epochs=epochs, device="cpu", model_config={"text": text})
    cfg.train.out_dir = folder
    cache = frozen_states("minilm")
    hits, misses = cache.hits, cache.misses
    t0 = time.perf_counter()
    rec = run(cfg)
    wall = time.perf_counter() - t0
    a = rec[(rec["protocol"] == "A") & (rec["setting"] == "rate")]
    mean = lambda m: float(a.loc[a["metric"] == m, "value"].mean())  # noqa: E731
    return {"model": model, "text": "features" if text["kind"] == "features" else "minilm-frozen",
            "cache": text["kind"] != "features" and text.get("cache", True),
            "epochs": cfg.train.epochs, "wall_s": round(wall, 2), "cache_hits": cache.hits - hits,
            "cache_misses": cache.misses - misses, "cache_mb": round(cache.bytes / 2**20, 1),
            "test_MAE_protocol_A_mean": round(mean("MAE"), 4), "test_Acc2_protocol_A_mean": round(mean("Acc-2 non-0"), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lnln,promma,baseline")
    ap.add_argument("--epochs", type=int, default=None, help="default: each preset's")
    ap.add_argument("--no-cache", action="store_true", help="also time the frozen MiniLM without its cache")
    a = ap.parse_args()
    book.setup(threads=1)
    models = a.models.split(",")
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for text in [FEATURES, MINILM] + ([{**MINILM, "cache": False}] if a.no_cache else []):
            for m in models:
                runs.append(one_run(m, text, a.epochs, f"{d}/{m}-{len(runs)}"))
                print(runs[-1], flush=True)
    base = {r["model"]: r["wall_s"] for r in runs if r["text"] == "features"}
    for r in runs:
        r["time_ratio_vs_features"] = round(r["wall_s"] / base[r["model"]], 2)
    emit({"benchmark": "text_path", "models": models, **environment(torch.device("cpu")), "threads": 1,
          "runs": runs, "peak_memory_mb": peak_memory_mb(torch.device("cpu"))})


if __name__ == "__main__":
    main()
