"""Runs and caching: a chapter's set-up, its dataset, the preset a run starts from, and :func:`trained`, which
trains a model once and reuses it afterwards.

:func:`trained` trains through :func:`mmsa_core.experiment.run` into a cache folder named after the run's config
hash (:func:`runs_dir`: ``runs/book/`` in a checkout, gitignored), and reuses a finished run: executing a chapter
twice, or two chapters that need the same model, trains it once. Two chapters executed in parallel (papermill,
``-j 2``) that need the same run wait for each other on a file lock (:func:`run_lock`) instead of writing the
same folder at once.

Presets: a run starts from the preset ``<model>_<preset>.yaml`` (``mmsa_core/configs/``, or your own
``./configs/``) where that file exists, else from the model's own defaults. ``<preset>`` is ``default`` (sized for
the embedded data on a CPU) on the embedded data, ``mosi`` on its CMU-MOSI-sized variant (``full=True``), and on a
real file ``mosi``, ``mosei`` or ``sims`` as its path says (else ``default``). The chapter's arguments (protocol,
seed, epochs, model_config) are applied on top.

Downloads: a run whose text encoder is a hub model (BERT-base in the LNLN presets of the papers' sizes) downloads it
from the Hugging Face hub once; when the hub cannot be reached, :func:`trained` stops at once with one message
(:func:`require_hub`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import DataConfig, RunConfig, config_dirs, config_hash, load_config, preset_file
from ..data.mmsa import MMSADataset, family_from_path
from ..experiment import load_checkpoint, load_dataset, run
from ..records import last_stage
from ..utils import file_lock, resolve_device, set_seed, stable_hash

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent  # mmsa_core/
ROOT = PACKAGE.parent  # the checkout, when the package runs from one
# what cannot change a trained model (a cached run stays valid when only these change): this book/ folder and
# these files at the top of the package
NOT_TRAINING_CODE = {"viz.py", "records.py", "results.py", "reproduce.py", "__main__.py"}


# --------------------------------------------------------------------------------------------- set-up
def setup(seed: int = 0, threads: int | None = 1, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch, fix the number of CPU threads and ask for deterministic kernels, so
    that a chapter's outputs are the same on every run. Call it once at the top of a chapter."""
    set_seed(seed, deterministic, threads)
    pd.set_option("display.max_colwidth", 80)


def is_checkout(root: Path = ROOT) -> bool:
    """True when the package runs from a clone of the book's repository (not from site-packages)."""
    return (root / "_toc.yml").is_file() and (root / "mmsa_core").is_dir()


def runs_dir() -> Path:
    """Where :func:`trained` keeps its runs: ``$MMSA_BOOK_RUNS``, else ``runs/book`` in the checkout, else
    ``runs/book`` under the current folder (e.g. ``/content`` on Colab)."""
    if os.environ.get("MMSA_BOOK_RUNS"):
        return Path(os.environ["MMSA_BOOK_RUNS"]).expanduser()
    return (ROOT if is_checkout() else Path.cwd()) / "runs" / "book"


# --------------------------------------------------------------------------------------------- the chapter's data
_DATA: dict[tuple, MMSADataset] = {}


def data_config(dataset: str = "synth", full: bool = False) -> DataConfig:
    """``"synth"`` (the embedded testbed, variant redundant) or ``"synth:<variant>"`` (e.g. ``synth:complementary``;
    ``full=True``: CMU-MOSI sizes); else the path of an MMSA pickle, named after the dataset its path names
    (``mosi``, ``mosei``, ``sims``) or else after the file."""
    if is_synth(dataset):
        variant = str(dataset).partition(":")[2] or DataConfig.synth_variant
        return DataConfig(dataset="synth", synth_shape="mosi" if full else "small", synth_variant=variant)
    p = Path(dataset).expanduser()
    return DataConfig(dataset=str(p), name=dataset_family(p) or p.stem)


def is_synth(dataset) -> bool:
    """Whether a chapter's ``dataset`` names the embedded testbed (``"synth"`` or ``"synth:<variant>"``)."""
    return str(dataset) == "synth" or str(dataset).startswith("synth:")


def load(dataset: str = "synth", full: bool = False) -> MMSADataset:
    """The dataset of a chapter, loaded once per kernel (feature pickles are read by a restricted unpickler)."""
    cfg = data_config(dataset, full)
    key = (cfg.dataset, cfg.synth_shape)
    if cfg.dataset == "synth":
        from ..data import synth

        key += (str(synth.default_path(cfg.synth_shape, cfg.synth_seed, cfg.synth_variant)),)
    else:
        p = Path(cfg.dataset)
        key += (p.stat().st_mtime_ns,) if p.exists() else ()
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg)
    return _DATA[key]


def dataset_family(dataset: str) -> str | None:
    """``"mosei"``, ``"mosi"`` or ``"sims"`` when the path names one of them, else None (a guess from the path, for
    names and presets: the loaded data decide the metrics, see :func:`mmsa_core.data.mmsa.family_from_path`)."""
    return family_from_path(dataset)


# --------------------------------------------------------------------------------------------- presets
def preset_name(dataset: str = "synth", full: bool = False) -> str:
    """Which preset a run starts from: ``default`` (sized for the embedded data on a CPU) for the embedded data,
    ``mosi`` for its CMU-MOSI-sized variant (``full=True``), and for a real file the dataset named in its path
    (``mosi``, ``mosei``, ``sims``), else ``default``."""
    if is_synth(dataset):
        return "mosi" if full else "default"
    return dataset_family(dataset) or "default"


def preset_path(model: str, dataset: str = "synth", full: bool = False) -> Path | None:
    """The preset ``<model>_<preset>.yaml`` (see :func:`preset_name`, :func:`mmsa_core.config.preset_file`); for a
    real file whose dataset has no preset, ``<model>_default.yaml``; None when there is none (the model's own
    defaults are used)."""
    real = not is_synth(dataset)
    presets = [preset_name(dataset, full)]
    if real and presets[0] != "default":
        presets.append("default")
    for k, preset in enumerate(presets):
        found = preset_file(model, preset)
        if found is not None:
            if k:
                log.warning("no preset %s_%s.yaml: using %s, which is sized for the embedded data", model, presets[0], found)
            return found
    if real or full:
        log.warning("no preset %s in %s: using the model's defaults", " or ".join(f"{model}_{p}.yaml" for p in presets),
                    ", ".join(map(str, config_dirs())))
    return None


def config(model: str, protocol: str | None = None, epochs: int | None = None, seed: int = 1111,
           dataset: str = "synth", full: bool = False, model_config: dict | None = None, device: str = "auto",
           progress: bool = False, **train) -> RunConfig:
    """The :class:`RunConfig` that :func:`trained` runs: the preset (if any), then the arguments on top.
    ``protocol=None`` and ``epochs=None`` keep the preset's (else protocol A, 10 epochs); ``model_config`` is
    merged into the preset's; extra keywords set TrainConfig fields. The data section is always the chapter's
    (the preset's names a placeholder path)."""
    over: dict = {"model": model, "train": {"seed": int(seed), "device": device, "progress": bool(progress), **train}}
    if protocol is not None:
        over["train"]["protocol"] = protocol
    if epochs is not None:
        over["train"]["epochs"] = int(epochs)
    if model_config:
        over["model_config"] = model_config
    cfg = load_config(preset_path(model, dataset, full), over)
    cfg.data = data_config(dataset, full)
    return cfg


# ------------------------------------------------------------------------------- downloads from the hub
def hub_models(cfg: RunConfig) -> list[str]:
    """The Hugging Face hub models a run downloads: its text encoder when that is a hub name (``kind: pretrained``,
    neither ``minilm``, the packaged offline MiniLM, nor a local folder), e.g. ``bert-base-uncased`` in the LNLN
    presets of the papers' sizes (``lnln_mosi.yaml``: ``full=True`` on the embedded data)."""
    from ..experiment import model_config

    text = getattr(model_config(cfg), "text", None)
    if text is None or text.kind != "pretrained" or text.name_or_path == "minilm":
        return []
    return [] if Path(text.name_or_path).expanduser().exists() else [text.name_or_path]


def _in_hub_cache(name: str) -> bool:
    """True when the hub model ``name`` (its config and weights) is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    def cached(f):
        return isinstance(try_to_load_from_cache(name, f), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


def _hub_unreachable(timeout_s: float = 10.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (``HF_HUB_OFFLINE`` set, or no answer), or None when it answers."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None  # it answered (with an error code): the hub is there
    except (OSError, ValueError) as e:
        return f"{constants.ENDPOINT} did not answer: {getattr(e, 'reason', e)}"
    return None


def require_hub(names: list[str], what: str = "This run") -> None:
    """Nothing when every hub model in ``names`` is cached or the hub answers; else ONE error that names the model,
    says why it cannot be downloaded and what to do (a chapter calls this before it loads any data)."""
    missing = [n for n in names if not _in_hub_cache(n)]
    reason = _hub_unreachable() if missing else None
    if reason:
        raise RuntimeError(
            f"{what} loads the text encoder {', '.join(map(repr, missing))} from the Hugging Face hub "
            f"(BERT-base: about 440 MB, downloaded once into the Hugging Face cache), and the hub is not reachable "
            f"({reason}). Connect to the internet and run the cell again, or run on the embedded data with "
            "full=False (nothing to download).") from None


# --------------------------------------------------------------------------------------------- the run cache
def code_fingerprint() -> str:
    """A hash of the package's training code (not of the book, plotting or results files)."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*.py")):
        if (p.name in NOT_TRAINING_CODE and p.parent == PACKAGE) or p.parent == Path(__file__).resolve().parent:
            continue
        h.update(str(p.relative_to(PACKAGE)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def run_lock(path):
    """Hold an exclusive lock on the file ``path`` for the duration of the block; another process (or thread) asking
    for the same lock waits. The project's one lock mechanism (:func:`mmsa_core.utils.file_lock`)."""
    return file_lock(path)


@contextlib.contextmanager
def preserved_rng():
    """Restore the global random states on exit: a chapter continues identically whether a run was trained
    now or reused from the cache."""
    st = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
          torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        torch.set_rng_state(st[0])
        np.random.set_state(st[1])
        random.setstate(st[2])
        if st[3] is not None:
            torch.cuda.set_rng_state_all(st[3])


@dataclass
class TrainedRun:
    """A trained (or reused) run. ``model, data, records = book.trained(...)`` unpacks the first three."""

    model: torch.nn.Module  # the selected checkpoint (best validation score), in eval mode
    data: MMSADataset
    records: pd.DataFrame  # tidy test records: protocol, setting, level, mode, metric, value, ...
    history: pd.DataFrame  # per-epoch training losses and validation metrics
    dir: Path
    config: RunConfig
    reused: bool

    def __iter__(self):
        return iter((self.model, self.data, self.records))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on."""
    return next(model.parameters()).device


def run_dir(cfg: RunConfig, ds: MMSADataset, cache_dir=None) -> Path:
    """The cache folder of a run: model, dataset, protocol, seed and a hash of its config and data."""
    key = stable_hash({"config": config_hash(cfg), "data": ds.fingerprint})
    return Path(cache_dir or runs_dir()) / f"{cfg.model}-{ds.name}-{cfg.train.protocol}-s{cfg.train.seed}-{key}"


def read_json(p: Path) -> dict:
    """The JSON object in ``p``; ``{}`` when the file is missing or not JSON (a run folder being written)."""
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def trained(model: str, protocol: str | None = None, epochs: int | None = None, seed: int = 1111, dataset: str = "synth",
            full: bool = False, model_config: dict | None = None, cache_dir=None, device: str = "auto",
            progress: bool = False, fresh: bool | None = None, forward_hook=None, **train) -> TrainedRun:
    """Train ``model`` under missing-data ``protocol`` (None: the preset's, else "A"), or reuse the finished run
    with the same config, and return the selected model, the dataset and the tidy test records (every rate under
    both protocols). The arguments are those of :func:`config`; ``cache_dir`` defaults to :func:`runs_dir`.

    ``fresh``: None = retrain a small default run whose training code has changed since it was cached (a run
    with ``full=True`` or a real dataset is then reused, with a warning); True = always retrain; False = reuse
    any finished run with this config.

    ``forward_hook``: held while the run trains, if it trains here (see :func:`mmsa_core.train.fit`): a recorder
    such as :class:`mmsa_core.book.DiscriminatorRecorder` sees nothing of a reused run.
    """
    cfg = config(model, protocol, epochs, seed, dataset, full, model_config, device, progress, **train)
    require_hub(hub_models(cfg), f"This run ({model}, preset {model}_{preset_name(dataset, full)}.yaml)")  # before the data
    ds = load(dataset, full)  # the same object as the chapter's book.load(dataset, full)
    folder = run_dir(cfg, ds, cache_dir)
    cfg.train.out_dir = str(folder)
    code = code_fingerprint()
    small = is_synth(dataset) and not full
    needed = ("best.pt", "results.csv", "history.csv")
    with preserved_rng(), run_lock(folder.parent / f"{folder.name}.lock"):
        info = read_json(folder / "book.json")
        stale = bool(info) and info.get("code") != code
        if folder.exists() and (fresh or (stale and fresh is None and small)):
            log.info("%s: retraining (%s)", folder, "fresh=True" if fresh else "the training code changed")
            shutil.rmtree(folder)
            info = {}
        elif stale:
            log.warning("%s was trained with other training code (%s, now %s); reusing it (fresh=True retrains)",
                        folder, info.get("code"), code)
        reused = bool(info.get("finished")) and all((folder / f).is_file() for f in needed)
        if not reused:
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"config_hash": config_hash(cfg), "data_fingerprint": ds.fingerprint, "code": code}
            (folder / "book.json").write_text(json.dumps({**meta, "finished": False}, indent=2))
            run(cfg, dataset=ds, forward_hook=forward_hook)  # resumes from last.pt if an interrupted run left one
            (folder / "book.json").write_text(json.dumps({**meta, "finished": True}, indent=2))
        records = pd.read_csv(folder / "results.csv")
        history = last_stage(pd.read_csv(folder / "history.csv"))
        net, _ = load_checkpoint(folder / "best.pt", ds.spec, resolve_device(device))
    return TrainedRun(net, ds, records, history, folder, cfg, reused)


__all__ = ["NOT_TRAINING_CODE", "TrainedRun", "code_fingerprint", "config", "data_config", "dataset_family", "hub_models",
           "is_checkout", "is_synth", "load", "model_device", "preserved_rng", "preset_name", "preset_path", "read_json",
           "require_hub", "run_dir", "run_lock", "runs_dir", "setup", "trained"]
