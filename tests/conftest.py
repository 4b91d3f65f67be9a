"""Shared test helpers. Several engineers add fixtures here: add yours, never replace the file wholesale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- foundation (data, protocols, trainer, CLI)

@pytest.fixture(scope="session")
def mmsa_cache_dir(tmp_path_factory) -> Path:
    """One cache folder for the whole session: the embedded dataset is generated once, never in ~/.cache."""
    return tmp_path_factory.mktemp("mmsa_cache")


@pytest.fixture(autouse=True)
def _mmsa_cache_env(monkeypatch, mmsa_cache_dir):
    """Every test sees MMSA_CACHE = the session's temporary cache (nothing is written to ~/.cache)."""
    monkeypatch.setenv("MMSA_CACHE", str(mmsa_cache_dir))


@pytest.fixture(scope="session")
def synth_path(mmsa_cache_dir) -> Path:
    """The embedded default dataset (shape 'small', seed 0) at the path ``synth.ensure`` uses under MMSA_CACHE."""
    from mmsa_core.data import synth

    p = mmsa_cache_dir / synth.default_path("small", 0).name
    if not p.exists():
        synth.generate(p, "small", 0)
    return p


@pytest.fixture(scope="session")
def synth_ds(synth_path):
    """The embedded default dataset loaded as ``experiment.load_dataset`` loads it (do not modify it)."""
    from mmsa_core.data.mmsa import load_mmsa

    return load_mmsa(synth_path, name="synth-small")


@pytest.fixture
def restore_torch_globals():
    """Undo what ``set_seed`` changes process-wide (thread count, deterministic algorithms) after a test."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn)


def make_mmsa_splits(n=(6, 4, 5), Lt=5, Dt=8, La=6, Da=3, Lv=4, Dv=2, seed=0, label_scale=3.0) -> dict:
    """A small, valid dict of splits in the MMSA pickle format (arrays as the real pickles hold them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, k in zip(("train", "valid", "test"), n):
        ntok = rng.integers(2, Lt + 1, size=k)  # [CLS] + words + [SEP]
        ids = np.zeros((k, Lt), np.int64)
        mask = np.zeros((k, Lt), np.int64)
        for i, t in enumerate(ntok):
            ids[i, :t] = [101] + list(rng.integers(1000, 2000, size=t - 2)) + [102]
            mask[i, :t] = 1
        out[name] = {
            "id": np.array([f"{name}_{i}" for i in range(k)]),
            "raw_text": np.array([f"text {i}" for i in range(k)]),
            "text": rng.normal(size=(k, Lt, Dt)),
            "text_bert": np.stack([ids, mask, np.zeros_like(ids)], 1).astype(np.float32),
            "audio": rng.normal(size=(k, La, Da)).astype(np.float32),
            "audio_lengths": rng.integers(1, La + 1, size=k),
            "vision": rng.normal(size=(k, Lv, Dv)).astype(np.float32),
            "vision_lengths": rng.integers(1, Lv + 1, size=k),
            "regression_labels": rng.uniform(-label_scale, label_scale, size=k).astype(np.float32),
            "classification_labels": rng.integers(0, 3, size=k).astype(np.float32),
        }
    return out


@pytest.fixture
def mmsa_splits():
    """A fresh small valid dict of splits (mutate it freely, then write it with ``write_mmsa``)."""
    return make_mmsa_splits()


def cli_env(cache_dir) -> dict:
    """Environment for ``python -m mmsa_core`` in a subprocess: this checkout importable, the test cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MMSA_CACHE"] = str(cache_dir)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(args, cache_dir, timeout=120, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m mmsa_core ARGS`` in a subprocess (cwd = repo root) and capture its output."""
    return subprocess.run([sys.executable, "-m", "mmsa_core", *map(str, args)], cwd=REPO, env=cli_env(cache_dir),
                          capture_output=True, text=True, timeout=timeout, **kw)


# Under pytest-xdist (make test-unit: -n $(JOBS)) the workers share the cores: one torch thread per core each, so
# that two workers on two cores do not run four threads (tests that need a count set it themselves).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
