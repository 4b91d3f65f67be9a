"""Small shared helpers: seeding and determinism, devices, stable hashes, provenance, atomic saves, checkpoint
files (read with ``torch.load(weights_only=True)``) and the run-folder lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = True, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform): float results of a run may differ between models."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stable_hash(obj, n: int = 12) -> str:
    """A short hash of a JSON-able object that is the same in every process and on every machine."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        # tracked files changed since that commit: the code that ran is not exactly the commit's
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "mmsa_core"], cwd=root, timeout=5)
        return commit + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a half-written checkpoint. The
    temporary name is unique (``mkstemp`` in the same folder), so two writers never share one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (cut short, not a torch file, or holding objects other than
    tensors and plain Python values); the message names the file."""


def load_checkpoint_file(path, map_location="cpu") -> dict:
    """A checkpoint written by :func:`atomic_save`, read with ``torch.load(weights_only=True)``: only tensors and
    plain Python values (dict, list, tuple, str, numbers, None) are rebuilt, so no file can run code. Any failure
    is one :class:`CheckpointError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # a pickle of another protocol (not a checkpoint) warns before it fails
            warnings.simplefilter("ignore", UserWarning)
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a cut or foreign file fails in many ways (EOFError, OSError, RuntimeError...)
        text = str(e)
        if "Weights only load failed" in text:  # torch's long advice to trust the file is not ours to give
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"WeightsUnpickler error: ([^\n]+)", text)
            what = f"refused {found.group(1)}" if found else "refused a non-tensor object"
            raise CheckpointError(f"{path}: not a readable checkpoint: it holds objects other than tensors and plain "
                                  f"values ({what}); mmsa_core reads checkpoints with torch.load(weights_only=True) "
                                  "and never runs code from one") from e
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first[:300]}); "
                              "is the file complete?") from e
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a checkpoint written by mmsa_core (a {type(ck).__name__}, not a dict)")
    return ck


class RunFolderBusy(RuntimeError):
    """Another process holds the lock of a run folder."""


@contextlib.contextmanager
def file_lock(path, timeout: float = -1, busy: str | None = None):
    """Hold an exclusive lock on the file ``path`` (created if needed; the ``filelock`` library) for the block.
    ``timeout`` -1 waits for another holder (process or thread); otherwise after ``timeout`` seconds raise
    :class:`RunFolderBusy` with the message ``busy``. Re-entrant within a thread (one lock object per path)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise RunFolderBusy(busy or f"{path}: held by another process") from None
    try:
        yield
    finally:
        lock.release()


def run_folder_lock(folder):
    """The lock of a run folder (its file ``.lock``), taken by every writer of the folder's checkpoints and
    results: a second run into the same folder stops at once with :class:`RunFolderBusy` instead of overwriting."""
    folder = Path(folder)
    return file_lock(folder / ".lock", timeout=0,
                     busy=f"{folder}: another run is writing into this folder (it holds {folder / '.lock'}); "
                          "wait for it to finish or use another --out folder")
