"""Several ``reproduce`` processes sharing one grid: each cell runs exactly once, under a per-cell lock, and a cell
whose process is killed is finished (resumed from its last.pt) by a process still running."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, cli_env
from mmsa_core import reproduce
from mmsa_core.data import synth
from mmsa_core.data.mmsa import write_mmsa

CELLS = [f"baseline-{p}-{s}" for p in "AB" for s in (1111, 1112)]


def small_data(tmp_path):
    return write_mmsa(tmp_path / "tiny.pkl", {s: synth.make_split(synth.SHAPES["small"], n, 0, s)
                                              for s, n in (("train", 128), ("valid", 64), ("test", 64))})


def grid_cmd(data, out, epochs=2):
    return [sys.executable, "-m", "mmsa_core", "reproduce", "--models", "baseline", "--protocols", "A", "B",
            "--seeds", "1111", "1112", "--epochs", str(epochs), "--data", str(data), "--out", str(out), "--quiet",
            "--set", "train.threads=1", "--set", "train.batch_size=32"]


def counts(stdout: str) -> dict:
    m = re.search(r"cells: (\d+) ran, (\d+) resumed, (\d+) already finished", stdout)
    assert m, stdout
    return dict(zip(("ran", "resumed", "skipped"), map(int, m.groups())))


@pytest.mark.slow
def test_two_processes_share_a_grid_and_run_each_cell_once(tmp_path, mmsa_cache_dir):
    data, out, env = small_data(tmp_path), tmp_path / "grid", cli_env(mmsa_cache_dir)
    procs = [subprocess.Popen(grid_cmd(data, out), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    c = [counts(so) for so, _ in outs]
    assert sum(x["ran"] for x in c) == len(CELLS) and sum(x["resumed"] for x in c) == 0  # nothing run twice
    records = reproduce.read_csv(out / "records.csv")  # written by the last process: the whole grid
    assert sorted(records[["model", "train_protocol", "seed"]].drop_duplicates().apply(
        lambda r: f"{r.model}-{r.train_protocol}-{r.seed}", axis=1)) == sorted(CELLS)
    assert len(reproduce.finished_cells(out)) == len(CELLS)
    # the locks are free again once the processes have ended
    for name in CELLS:
        lock = reproduce.grid_lock(out, name)
        lock.acquire(timeout=0)
        lock.release()


@pytest.mark.slow
def test_a_killed_process_loses_nothing(tmp_path, mmsa_cache_dir):
    """Kill the first process in the middle of a cell; a second process resumes that cell and runs the rest."""
    data, out, env = small_data(tmp_path), tmp_path / "grid", cli_env(mmsa_cache_dir)
    epochs = 6
    first = subprocess.Popen(grid_cmd(data, out, epochs), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    last = out / "runs" / CELLS[0] / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while first.poll() is None and time.monotonic() < deadline and not last.exists():
            time.sleep(0.02)
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL, f"the first process ended ({first.returncode}) before it could be killed"
    assert not (out / "runs" / CELLS[0] / "results.csv").exists()
    second = subprocess.run(grid_cmd(data, out, epochs), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    c = counts(second.stdout)
    assert c == {"ran": len(CELLS) - 1, "resumed": 1, "skipped": 0}, c
    prov = pd.read_json(out / "runs" / CELLS[0] / "provenance.json", typ="series")
    assert int(prov["resumed_from"]) >= 1
    assert len(reproduce.finished_cells(out)) == len(CELLS)
