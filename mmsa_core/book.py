"""What the book's chapters call: a handful of functions that keep the notebooks short.

A chapter reads like this::

    from mmsa_core import book, viz
    book.setup()                                              # seeds, 1 thread, deterministic kernels
    data = book.load(dataset, full)                           # the embedded default or an MMSA pickle
    run = book.trained("baseline", epochs=epochs, dataset=dataset, full=full, device=device)
    book.metrics_table(run.records, protocol="A", level=0.0)  # a rounded table
    viz.show_fig(viz.curve(book.at_rates(run.records, "MAE")), "fig-mae")

:func:`trained` trains through :func:`mmsa_core.experiment.run` into a cache folder named after the run's
config hash (``runs/book/`` in a checkout, gitignored), and reuses a finished run: executing a chapter twice,
or two chapters that need the same model, trains it once. Two chapters executed in parallel (papermill, ``-j 2``)
that need the same run wait for each other on a file lock instead of writing the same folder at once.

Presets: a run starts from the preset ``<model>_<preset>.yaml`` (``mmsa_core/configs/``, or your own
``./configs/``) where that file exists, else from the model's own defaults. ``<preset>`` is ``default`` (sized for the embedded data on a CPU) on the embedded data, ``mosi`` on its
CMU-MOSI-sized variant (``full=True``), and on a real file ``mosi``, ``mosei`` or ``sims`` as its path says (else
``default``). The chapter's arguments (protocol, seed, epochs, model_config) are applied on top.

This module sits at the top of the package: it may import any of ``mmsa_core``; nothing there imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics as M
from . import missing
from .config import DataConfig, RunConfig, config_dirs, config_hash, load_config, preset_file
from .data.mmsa import MMSADataset
from .experiment import load_checkpoint, load_dataset, run
from .results import last_stage
from .utils import resolve_device, set_seed, stable_hash

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
# files whose changes cannot change a trained model (a cached run stays valid when only these change)
NOT_TRAINING_CODE = {"book.py", "viz.py", "results.py", "reproduce.py", "__main__.py"}
# how the metrics are shown in tables: accuracies and F1 as percentages
PERCENT_PREFIXES = ("Acc", "F1")


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


# --------------------------------------------------------------------------------------------- data
_DATA: dict[tuple, MMSADataset] = {}


def data_config(dataset: str = "synth", full: bool = False) -> DataConfig:
    """``"synth"``: the embedded default (``full=True``: its CMU-MOSI-sized variant); else the path of an MMSA
    pickle, named after the dataset its path names (``mosi``, ``mosei``, ``sims``) or else after the file."""
    if str(dataset) == "synth":
        return DataConfig(dataset="synth", synth_shape="mosi" if full else "small")
    p = Path(dataset).expanduser()
    return DataConfig(dataset=str(p), name=dataset_family(p) or p.stem)


def load(dataset: str = "synth", full: bool = False) -> MMSADataset:
    """The dataset of a chapter, loaded once per kernel (pickles run code when loaded: trusted files only)."""
    cfg = data_config(dataset, full)
    key = (cfg.dataset, cfg.synth_shape)
    if cfg.dataset == "synth":
        from .data import synth

        key += (str(synth.default_path(cfg.synth_shape, cfg.synth_seed)),)
    else:
        p = Path(cfg.dataset)
        key += (p.stat().st_mtime_ns,) if p.exists() else ()
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg)
    return _DATA[key]


def dataset_family(dataset: str) -> str | None:
    """``"mosei"``, ``"mosi"`` or ``"sims"`` when the path names one of them, else None."""
    s = str(dataset).lower()
    for fam in ("mosei", "mosi", "sims"):
        if fam in s:
            return fam
    return None


# --------------------------------------------------------------------------------------------- runs
def preset_name(dataset: str = "synth", full: bool = False) -> str:
    """Which preset a run starts from: ``default`` (sized for the embedded data on a CPU) for the embedded data,
    ``mosi`` for its CMU-MOSI-sized variant (``full=True``), and for a real file the dataset named in its path
    (``mosi``, ``mosei``, ``sims``), else ``default``."""
    if str(dataset) == "synth":
        return "mosi" if full else "default"
    return dataset_family(dataset) or "default"


def preset_path(model: str, dataset: str = "synth", full: bool = False) -> Path | None:
    """The preset ``<model>_<preset>.yaml`` (see :func:`preset_name`, :func:`mmsa_core.config.preset_file`); for a
    real file whose dataset has no preset, ``<model>_default.yaml``; None when there is none (the model's own
    defaults are used)."""
    real = str(dataset) != "synth"
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


def code_fingerprint() -> str:
    """A hash of the package's training code (not of the book, plotting or results files)."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.name in NOT_TRAINING_CODE and p.parent == PACKAGE:
            continue
        h.update(str(p.relative_to(PACKAGE)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def run_lock(path):
    """Hold an exclusive lock on the file ``path`` (created if needed) for the duration of the block; another
    process (or thread) asking for the same lock waits. Without ``fcntl`` (Windows) the block runs unlocked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


def run_dir(cfg: RunConfig, ds: MMSADataset, cache_dir=None) -> Path:
    key = stable_hash({"config": config_hash(cfg), "data": ds.fingerprint})
    return Path(cache_dir or runs_dir()) / f"{cfg.model}-{ds.name}-{cfg.train.protocol}-s{cfg.train.seed}-{key}"


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def trained(model: str, protocol: str | None = None, epochs: int | None = None, seed: int = 1111, dataset: str = "synth",
            full: bool = False, model_config: dict | None = None, cache_dir=None, device: str = "auto",
            progress: bool = False, fresh: bool | None = None, **train) -> TrainedRun:
    """Train ``model`` under missing-data ``protocol`` (None: the preset's, else "A"), or reuse the finished run
    with the same config, and return the selected model, the dataset and the tidy test records (every rate under
    both protocols). The arguments are those of :func:`config`; ``cache_dir`` defaults to :func:`runs_dir`.

    ``fresh``: None = retrain a small default run whose training code has changed since it was cached (a run
    with ``full=True`` or a real dataset is then reused, with a warning); True = always retrain; False = reuse
    any finished run with this config.
    """
    cfg = config(model, protocol, epochs, seed, dataset, full, model_config, device, progress, **train)
    ds = load(dataset, full)  # the same object as the chapter's book.load(dataset, full)
    folder = run_dir(cfg, ds, cache_dir)
    cfg.train.out_dir = str(folder)
    code = code_fingerprint()
    small = str(dataset) == "synth" and not full
    needed = ("best.pt", "results.csv", "history.csv")
    with preserved_rng(), run_lock(folder.parent / f"{folder.name}.lock"):
        info = _read_json(folder / "book.json")
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
            run(cfg, dataset=ds)  # resumes from last.pt if an interrupted run left one
            (folder / "book.json").write_text(json.dumps({**meta, "finished": True}, indent=2))
        records = pd.read_csv(folder / "results.csv")
        history = last_stage(pd.read_csv(folder / "history.csv"))
        net, _ = load_checkpoint(folder / "best.pt", ds.spec, resolve_device(device))
    return TrainedRun(net, ds, records, history, folder, cfg, reused)


# --------------------------------------------------------------------------------------------- tables
def _percent(df: pd.DataFrame, digits: int = 2, other_digits: int = 3) -> pd.DataFrame:
    """Accuracies and F1 as percentages rounded to ``digits``; the other columns rounded to ``other_digits``."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            pct = str(c).startswith(PERCENT_PREFIXES)
            out[c] = (out[c] * 100).round(digits) if pct else out[c].round(other_digits)
            out[c] = out[c] + 0.0  # no "-0.0"
    return out


def headline_metrics(language: str = "en") -> list[str]:
    """The columns a compact table shows: MOSI-style for English data, SIMS-style for Chinese."""
    if language == "zh":
        return ["Acc-2", "F1", "Acc-3", "Acc-5", "MAE", "Corr"]
    return ["Acc-2 has-0", "Acc-2 non-0", "F1 non-0", "Acc-7", "MAE", "Corr"]


def metrics_table(records: pd.DataFrame, protocol: str = "A", level: float | None = 0.0, mode: str | None = None,
                  by=("model",), metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per ``by`` group: the metrics at one test setting (``level`` = r for A, eta for B; or a
    protocol-B ``mode`` name such as ``"{l,a}"``; ``level=None`` = the mean over the ten rates).
    Accuracies and F1 in percent. With several seeds the mean is shown."""
    df = records[records.protocol == protocol]
    if mode is not None:
        df = df[(df.setting == "mode") & (df["mode"] == mode)]
    elif level is None:
        df = df[df.setting == "rate"]
    else:
        df = df[(df.setting == "rate") & np.isclose(df.level.astype(float), float(level))]
    if df.empty:
        raise ValueError(f"no records for protocol {protocol}, level {level}, mode {mode}")
    by = list(by)
    order = list(dict.fromkeys(df.metric))
    tab = df.groupby(by + ["metric"], sort=False).value.mean().unstack("metric")[order]
    if metrics:
        tab = tab[[m for m in metrics if m in tab.columns]]
    tab.columns.name = None
    return _percent(tab)


def at_rates(records: pd.DataFrame, metric: str = "MAE", protocol: str = "A", by=("model",)) -> pd.DataFrame:
    """Tidy rows (by..., level, value) of one metric at every test rate: what :func:`mmsa_core.viz.curve` draws.
    Accuracies and F1 in percent; several seeds are averaged (``std`` holds their standard deviation)."""
    df = records[(records.protocol == protocol) & (records.setting == "rate") & (records.metric == metric)]
    by = list(by)
    g = df.groupby(by + ["level"], sort=False).value
    out = g.mean().rename("value").to_frame().join(g.std(ddof=0).rename("std")).reset_index()
    scale = 100.0 if metric.startswith(PERCENT_PREFIXES) else 1.0
    out["value"] *= scale
    out["std"] = out["std"].fillna(0.0) * scale
    out["metric"] = metric
    return out


def examples(data: MMSADataset, split: str = "test", n: int = 6, start: int = 0) -> pd.DataFrame:
    """A few samples as a reader sees them: the words, the label, and how many tokens and frames they have."""
    s = data[split]
    b = s.data
    idx = range(start, min(start + n, len(s)))
    return pd.DataFrame({
        "id": [s.ids[i] for i in idx],
        "words": [s.raw_text[i] for i in idx],
        "label": [round(float(b.labels[i]), 2) + 0.0 for i in idx],
        "tokens": [int(b.text_mask[i].sum()) for i in idx],
        "audio frames": [int(b.audio_mask[i].sum()) for i in idx],
        "vision frames": [int(b.vision_mask[i].sum()) for i in idx],
    }).set_index("id")


KEY_MEANINGS = {
    "id": "sample id (video + segment)",
    "raw_text": "the transcript",
    "text": "precomputed text features per token",
    "text_bert": "token ids, attention mask, segment ids",
    "audio": "acoustic features per frame",
    "audio_lengths": "number of valid audio frames",
    "vision": "facial features per frame",
    "vision_lengths": "number of valid vision frames",
    "regression_labels": "sentiment score",
    "classification_labels": "sentiment class",
    "conflicting": "embedded data only: audio and vision contradict the words",
    "regression_labels_T": "text-only label (CH-SIMS)",
    "regression_labels_A": "audio-only label (CH-SIMS)",
    "regression_labels_V": "vision-only label (CH-SIMS)",
}


def format_table(data: MMSADataset, split: str = "train", max_bytes: int = 1 << 30) -> pd.DataFrame:
    """Every key of one split of the MMSA pickle behind ``data``: shape, dtype and meaning.

    Re-reads the file the dataset was loaded from (a file already trusted by loading it). A file larger than
    ``max_bytes`` (CMU-MOSEI's is several GB) is not read twice: the table then describes the loaded split."""
    path = Path(data.path)
    if path.stat().st_size > max_bytes:
        return _loaded_table(data, split)
    with open(path, "rb") as f:
        raw = pickle.load(f)[split]
    rows = []
    for k, v in raw.items():
        a = np.asarray(v)
        rows.append({"key": k, "shape": str(tuple(a.shape)), "dtype": str(a.dtype), "meaning": KEY_MEANINGS.get(k, "")})
    return pd.DataFrame(rows).set_index("key")


def _loaded_table(data: MMSADataset, split: str) -> pd.DataFrame:
    b = data[split].data
    n = len(b)
    shapes = {
        "text": tuple(b.text_feat.shape), "text_bert": (n, 3, b.text_ids.shape[1]), "audio": tuple(b.audio.shape),
        "audio_lengths": (n,), "vision": tuple(b.vision.shape), "vision_lengths": (n,), "regression_labels": (n,),
    }
    rows = [{"key": k, "shape": str(sh), "dtype": "(large file: not re-read)", "meaning": KEY_MEANINGS[k]}
            for k, sh in shapes.items()]
    return pd.DataFrame(rows).set_index("key")


def _pooled(b, modality: str) -> np.ndarray:
    """Mean over the valid positions of one modality: (N, D) float64."""
    x, mask = {"text": (b.text_feat, b.text_mask.bool()), "audio": (b.audio, b.audio_mask),
               "vision": (b.vision, b.vision_mask)}[modality]
    m = mask.double()[..., None]
    return ((x.double() * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()


def _ridge(a: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    a1 = np.concatenate([a, np.ones((len(a), 1))], 1)
    reg = lam * np.eye(a1.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the intercept
    return np.linalg.solve(a1.T @ a1 + reg, a1.T @ y)


def _affine(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a @ w[:-1] + w[-1]


def probe(data: MMSADataset, lambdas=(0.1, 1.0, 10.0, 100.0, 1e3, 1e4), metrics: list[str] | None = None) -> pd.DataFrame:
    """How much sentiment each modality carries on its own: a ridge regression (closed form, float64) on the
    mean of each modality's features over its valid positions, fitted on train with the penalty that scores
    best (MAE) on validation, scored on test. "constant" predicts the training mean: the floor to beat."""
    sp = {s: data[s].data for s in ("train", "valid", "test")}
    y = {s: b.labels.double().numpy() for s, b in sp.items()}
    lang = data.spec.language
    rows = {"constant": {**M.compute(np.full_like(y["test"], y["train"].mean()), y["test"], lang), "lambda": np.nan}}
    groups = {m: [m] for m in missing.MODALITIES} | {"all three": list(missing.MODALITIES)}
    for name, mods in groups.items():
        f = {s: np.concatenate([_pooled(b, m) for m in mods], 1) for s, b in sp.items()}
        mu, sd = f["train"].mean(0), f["train"].std(0) + 1e-8
        f = {s: (v - mu) / sd for s, v in f.items()}
        lam = min(lambdas, key=lambda lm: np.mean(np.abs(_affine(f["valid"], _ridge(f["train"], y["train"], lm)) - y["valid"])))
        pred = _affine(f["test"], _ridge(f["train"], y["train"], lam))
        rows[name] = {**M.compute(pred, y["test"], lang), "lambda": lam}
    tab = pd.DataFrame(rows).T
    tab.index.name = "features"
    return _percent(tab[(metrics or headline_metrics(lang)) + ["lambda"]])


def achieved(data: MMSADataset, protocol: str = "A", levels=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9), split: str = "test",
             seed: int = 0, train_draw: bool = True) -> pd.DataFrame:
    """What a protocol actually does to ``split`` (deterministic: the draws are seeded).

    A: the percentage of droppable positions (valid tokens except [CLS]/[SEP]; valid frames) dropped per
    modality, and of samples left untouched in all three; ``train_draw`` adds the training distribution
    (r ~ U(0, 1), r = 0 for half the samples). B: the percentage of samples missing each modality, and complete."""
    b = data[split].data
    cans = [c.cpu() for c in missing.droppable(b)]
    rows = {}
    settings = [(f"r = {lv:.1f}" if protocol == "A" else f"eta = {lv:.1f}", lv) for lv in levels]
    if protocol == "A" and train_draw:
        settings.append(("training draw", None))
    for name, lv in settings:
        plan = missing.draw(protocol, b, lv, seed, 0, split)
        keeps = (plan.text_keep, plan.audio_keep, plan.vision_keep)
        if protocol == "A":
            row = {m: float((~k & c).sum() / c.sum()) for m, k, c in zip(missing.MODALITIES, keeps, cans)}
            row["untouched samples"] = float(np.mean(np.all([(k | ~c).all(1).numpy() for k, c in zip(keeps, cans)], 0)))
        else:
            row = {f"{m} missing": float((~plan.present[:, i]).float().mean()) for i, m in enumerate(missing.MODALITIES)}
            row["complete samples"] = float((plan.mode == 0).float().mean())
        rows[name] = row
    tab = (pd.DataFrame(rows).T * 100).round(2) + 0.0
    tab.index.name = "setting"
    return tab


_VOCAB: dict[int, str] | None = None


def _token(i: int) -> str:
    """The WordPiece of a bert-base-uncased id: our lexicon first (every id of the embedded data), then the
    vocabulary of the packaged MiniLM if installed, else ``#id``."""
    global _VOCAB
    if _VOCAB is None:
        from .data import lexicon as lx

        _VOCAB = {lx.PAD_ID: "[PAD]", lx.UNK_ID: "[UNK]", lx.CLS_ID: "[CLS]", lx.SEP_ID: "[SEP]"}
        for w, v in (*lx.SENTIMENT.items(), *lx.INTENSIFIERS.items()):
            _VOCAB[v[0]] = w
        for w, v in (*lx.NEGATIONS.items(), *lx.NEUTRAL.items()):
            _VOCAB[v] = w
        try:
            from .models.text import minilm_path

            extra = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
            for k, w in enumerate(extra):
                _VOCAB.setdefault(k, w)
        except (RuntimeError, OSError):
            pass
    return _VOCAB.get(int(i), f"#{int(i)}")


def token_table(batch, plan, sample: int = 0, unk_id: int = 100) -> pd.DataFrame:
    """One sample's tokens before and after a missing-data ``plan`` (drawn on ``batch``): position, token,
    token id, and what the model receives instead."""
    n = int(batch.text_mask[sample].sum())
    idx = torch.tensor([sample])
    corrupted = missing.apply(batch.take(idx), plan.take(idx), unk_id)
    before = batch.text_ids[sample, :n].tolist()
    after = corrupted.text_ids[0, :n].tolist()
    return pd.DataFrame({"token": [_token(t) for t in before], "id": before,
                         "model sees": [_token(t) for t in after], "id seen": after}).rename_axis("position").T


def modes_table() -> pd.DataFrame:
    """The seven protocol-B missing modes: which modalities each keeps."""
    rows = []
    for i, (present, name) in enumerate(zip(missing.MODES, missing.MODE_NAMES)):
        gone = [m for m, p in zip(missing.MODALITIES, present) if not p]
        rows.append({"mode": i, "present": name, "missing": ", ".join(gone) or "nothing (complete)"})
    return pd.DataFrame(rows).set_index("mode")


def metric_steps(pred, label) -> pd.DataFrame:
    """Per sample, the quantities each MOSI metric compares (for a worked example)."""
    p, y = np.asarray(pred, np.float64), np.asarray(label, np.float64)
    return pd.DataFrame({
        "p": p, "y": y,
        "p >= 0": p >= 0, "y >= 0": y >= 0,
        "in non-0": y != 0,
        "class-7 p": np.round(np.clip(p, -3, 3)).astype(int), "class-7 y": np.round(np.clip(y, -3, 3)).astype(int),
        "class-5 p": np.round(np.clip(p, -2, 2)).astype(int), "class-5 y": np.round(np.clip(y, -2, 2)).astype(int),
        "|p - y|": np.round(np.abs(p - y), 4),
    }, index=pd.RangeIndex(1, len(p) + 1, name="sample"))


def metric_summary(pred, label, language: str = "en") -> pd.DataFrame:
    """:func:`mmsa_core.metrics.compute` as a one-row table (accuracies and F1 in percent)."""
    return _percent(pd.DataFrame([M.compute(pred, label, language)], index=["value"]), digits=2, other_digits=4)


__all__ = ["TrainedRun", "achieved", "at_rates", "code_fingerprint", "config", "examples", "format_table",
           "headline_metrics", "load", "metric_steps", "metric_summary", "metrics_table", "modes_table", "preset_name", "preset_path",
           "probe", "run_lock", "token_table", "runs_dir", "setup", "trained"]


# --------------------------------------------------------------------------------------------- LNLN (chapters 6 and 7)
def spearman(x, y) -> float:
    """Spearman's rank correlation of two sequences (tied values share their mean rank)."""
    rx = pd.Series(np.asarray(x, np.float64)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, np.float64)).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def one_modality_sweep(model, data: MMSADataset, rates=(0.0, 0.3, 0.5, 0.7, 0.9), seed: int = 0, split: str = "test",
                       metrics: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows (corrupted, level, metric, value): the model's test metrics when protocol A at rate r corrupts ONE
    modality and leaves the other two complete. The masks are those of the ordinary test draw at r (seed
    ``seed``), so the three rows of a rate differ only in which modality the draw is applied to. Default metrics:
    binary accuracy (percent) and MAE."""
    import dataclasses

    from .evaluate import predict

    lang = data.spec.language
    metrics = metrics or ["Acc-2" if lang == "zh" else "Acc-2 non-0", "MAE"]
    cpu = data[split].data
    dev = cpu.to(_device_of(model))
    y = cpu.labels.numpy()
    rows = []
    for r in rates:
        plan = missing.protocol_a(cpu, r, seed, 0, split)
        keeps = (plan.text_keep, plan.audio_keep, plan.vision_keep)
        scores = None
        for i, m in enumerate(missing.MODALITIES):
            k = [kk if j == i else torch.ones_like(kk) for j, kk in enumerate(keeps)]
            rates_i = plan.rates * (torch.arange(3) == i).float()  # the other two are complete
            one = dataclasses.replace(plan, text_keep=k[0], audio_keep=k[1], vision_keep=k[2], rates=rates_i)
            if scores is None or float(r) > 0:  # at r = 0 the three inputs are the same: predict once
                scores = M.compute(predict(model, dev, one, data.spec.unk_id).numpy(), y, lang)
            rows += [{"corrupted": m, "level": float(r), "metric": name,
                      "value": scores[name] * (100.0 if name.startswith(PERCENT_PREFIXES) else 1.0)} for name in metrics]
    return pd.DataFrame(rows)


def completeness_scores(model, data: MMSADataset, rate: float | None = None, seed: int = 0,
                        split: str = "test") -> pd.DataFrame:
    """Per sample of ``split``: the share of its droppable text tokens that protocol A dropped, and LNLN's
    completeness score w. ``rate=None`` draws the training distribution (every sample its own rate, half of
    them complete), so the scores cover the whole range; a number applies that rate to every sample."""
    from .evaluate import predict

    cpu = data[split].data
    plan = missing.protocol_a(cpu, rate, seed, 0, split)
    _, ex = predict(model, cpu.to(_device_of(model)), plan, data.spec.unk_id, extras=True)
    if "w" not in ex:
        raise ValueError("the model has no completeness check (use_dmc is off)")
    return pd.DataFrame({"text missing rate": plan.rates[:, 0].numpy().astype(np.float64),
                         "w": ex["w"].numpy().astype(np.float64)})


@torch.no_grad()
def lnln_diagnostics(model, data: MMSADataset, rates=missing.RATES, seed: int = 0, split: str = "test",
                     batch_size: int = 256) -> pd.DataFrame:
    """What LNLN's auxiliary parts do at each protocol-A test rate r (all three modalities corrupted, the book's
    test draw), recomputed from the model's public parts on the incomplete input and on the complete one:

    - ``w``: the mean completeness score;
    - ``disc. accuracy``: how often the effectiveness discriminator labels a token correctly, on the corrected
      language tokens h_d (label 1) and on the complete input's language tokens c_l (label 0), half each;
    - ``h_l to c_l``, ``h_p to c_l``, ``h_d to c_l``: squared distance of the incomplete language tokens, of the
      proxy and of the corrected feature to c_l, relative to the squared norm of c_l (mean over samples);
    - ``rec. <m>`` and ``as is <m>``: the mean squared error to the complete input's summary tokens of modality m,
      of the reconstructor's output and of the incomplete tokens themselves (what doing nothing would give).

    Columns of parts the model does not have (ablations) are left out."""
    from .evaluate import autocast

    dev = _device_of(model)
    cpu = data[split].data
    full = cpu.to(dev)
    was_training = model.training
    model.eval()
    cfg = model.cfg
    out = []
    for r in rates:
        plan = missing.protocol_a(cpu, r, seed, 0, split)
        sums: dict[str, float] = {}

        def add(name, per_sample):
            sums[name] = sums.get(name, 0.0) + float(per_sample.float().sum())

        for start in range(0, len(cpu), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(cpu)))
            b = missing.apply(full.take(idx.to(dev)), plan.take(idx), data.spec.unk_id)
            with autocast(dev):
                inc, com = model.embed_batch(b), model.embed_batch(b.complete)
                c_l = com[0].float()
                norm = c_l.pow(2).sum((1, 2))
                if cfg.use_dmc:
                    w = model.completeness(inc[0])
                    h_p = model.proxy(inc[1], inc[2])
                    h_d = w[:, None, None] * inc[0] + (1.0 - w)[:, None, None] * h_p
                    add("w", w)
                    if model.use_adversarial:
                        tok_d = (model.discriminator(h_d).argmax(-1) == 1).float().mean(1)
                        tok_c = (model.discriminator(com[0]).argmax(-1) == 0).float().mean(1)
                        add("disc. accuracy", (tok_d + tok_c) / 2)
                    for name, h in (("h_l", inc[0]), ("h_p", h_p), ("h_d", h_d)):
                        add(f"{name} to c_l", (h.float() - c_l).pow(2).sum((1, 2)) / norm)
                for i, m in enumerate(missing.MODALITIES):
                    if cfg.use_reconstructor:
                        add(f"rec. {m}", (model.reconstructor[i](inc[i]).float() - com[i].float()).pow(2).mean((1, 2)))
                    add(f"as is {m}", (inc[i].float() - com[i].float()).pow(2).mean((1, 2)))
        out.append({"r": float(r), **{k: v / len(cpu) for k, v in sums.items()}})
    model.train(was_training)
    return pd.DataFrame(out).set_index("r")


def reconstruction_curves(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows (modality, tokens, level, value) from :func:`lnln_diagnostics`: the reconstruction error per
    modality against r, for the reconstructed tokens and for the incomplete tokens as they are."""
    rows = []
    for m in missing.MODALITIES:
        for col, kind in ((f"rec. {m}", "reconstructed"), (f"as is {m}", "incomplete, as is")):
            if col in diagnostics:
                rows += [{"modality": m, "tokens": kind, "level": float(r), "value": float(v)}
                         for r, v in diagnostics[col].items()]
    return pd.DataFrame(rows)


def hyper_attention(model, data: MMSADataset, rate: float, seed: int = 0, split: str = "test") -> dict[str, np.ndarray]:
    """The hyper-modality attention weights averaged over the samples of ``split`` (and over heads) at protocol-A
    rate ``rate``: ``{"audio": (layers, T, T), "vision": (layers, T, T)}``, rows = language tokens (queries),
    columns = the modality's summary tokens (keys)."""
    from .evaluate import predict

    cpu = data[split].data
    plan = missing.protocol_a(cpu, rate, seed, 0, split)
    _, ex = predict(model, cpu.to(_device_of(model)), plan, data.spec.unk_id, extras=True)
    return {m: ex[f"hyper_attn_{m}"].double().mean(0).numpy() for m in ("audio", "vision")}


_PART_NAMES = (  # parameter-name prefix -> the part of LNLN it belongs to
    ("embed_", "unimodal embedding (3 modalities)"),
    ("completeness.", "DMC: completeness check"),
    ("proxy.", "DMC: proxy generator"),
    ("discriminator.", "DMC: effectiveness discriminator"),
    ("dmml.language_encoder.", "DMML: language encoder"),
    ("dmml.hyper_", "DMML: hyper-modality learning"),
    ("dmml.fusion.", "DMML: fusion (cross Transformer)"),
    ("dmml.head.", "DMML: regression head"),
    ("reconstructor.", "reconstructor (3 modalities)"),
)


def lnln_parts(model, paper: str | None = "mosi") -> pd.DataFrame:
    """Parameters per part of an LNLN ``model`` (text encoder excluded), and with ``paper`` the same count for the
    authors' configuration of that dataset (``lnln_preset``, the paper's data shapes)."""
    from dataclasses import replace as _replace

    from .models.lnln import LNLN, PAPER_SPECS, lnln_preset
    from .models.text import TextEncoderConfig

    def count(net):
        c = dict.fromkeys([name for _, name in _PART_NAMES], 0)
        for n, p in net.named_parameters():
            part = next((name for pre, name in _PART_NAMES if n.startswith(pre)), None)
            if part is not None:
                c[part] += p.numel()
        return c

    cols = {"this model": count(model)}
    if paper:
        with preserved_rng():
            ref = LNLN(_replace(lnln_preset(paper), text=TextEncoderConfig(kind="features")), PAPER_SPECS[paper])
        cols[f"authors' {paper.upper()} size"] = count(ref)
    tab = pd.DataFrame(cols)
    tab.loc["total (text encoder excluded)"] = tab.sum()
    tab.index.name = "part"
    return tab.astype(np.int64)


class _DiscriminatorRecorder:
    """A global forward hook that reads LNLN's extras while the trainer runs: in training the discriminator's
    accuracy on each batch; in evaluation (the validation pass after each epoch) one more, introspective forward
    of the same batch. Reads only: the training it watches is unchanged."""

    def __init__(self, n_batches: int):
        self.n_batches, self.seen, self.busy, self.rows = n_batches, 0, False, {}

    def _add(self, epoch, key, values):
        row = self.rows.setdefault(epoch, {})
        s, n = row.get(key, (0.0, 0))
        row[key] = (s + float(values.float().sum()), n + values.numel())

    def __call__(self, module, args, output):
        from .models.lnln import LNLN

        if self.busy or not isinstance(module, LNLN):
            return None
        if module.training:
            epoch, self.seen = self.seen // self.n_batches, self.seen + 1
            if "disc_acc" in output.extras:
                self._add(epoch, "train", output.extras["disc_acc"])
            return None
        self.busy, old = True, module.introspect
        module.introspect = True
        try:
            ex = module(*args).extras
        finally:
            module.introspect, self.busy = old, False
        if "disc_acc" in ex:
            self._add(self.seen // self.n_batches - 1, "valid", ex["disc_acc"])
        return None

    def frame(self) -> pd.DataFrame:
        rows = [{"epoch": e, **{f"disc. accuracy ({k})": s / max(n, 1) for k, (s, n) in r.items()}}
                for e, r in sorted(self.rows.items())]
        return pd.DataFrame(rows)


def training_trace(run: TrainedRun) -> pd.DataFrame:
    """Per epoch of an LNLN ``run``: the effectiveness discriminator's accuracy on the training batches (mean over
    the epoch, corrupted and complete tokens half each) and on the validation split at the selection rate (after
    the epoch), and the discriminator's training cross-entropy (``train_adversarial`` / beta).

    The trainer does not record the accuracy. This retrains the run's exact configuration (same seed, data and
    code, hence the same trajectory: ``"train CE (cached run)"`` holds the cached run's history for comparison)
    while a forward hook reads the model's extras; the result is kept as ``trace.csv`` in the run's folder, so the
    retraining happens once."""
    import dataclasses
    import math
    import tempfile

    from .experiment import model_config
    from .models import build_model
    from .train import fit

    path = run.dir / "trace.csv"
    with run_lock(run.dir.parent / f"{run.dir.name}.lock"):
        if not path.is_file():
            cfg, t = run.config, run.config.train
            rec = _DiscriminatorRecorder(math.ceil(len(run.data["train"].data) / t.batch_size))
            with preserved_rng(), tempfile.TemporaryDirectory() as tmp:
                set_seed(t.seed, t.deterministic, t.threads)  # as experiment.run does before building the model
                net = build_model(cfg.model, model_config(cfg), run.data.spec)
                handle = torch.nn.modules.module.register_module_forward_hook(rec)
                try:
                    res = fit(net, run.data, dataclasses.replace(t, out_dir=tmp, progress=False), tmp, "trace")
                finally:
                    handle.remove()
            tab = rec.frame()
            hist = pd.DataFrame(res.history)
            beta = run.model.cfg.beta
            tab["train CE"] = hist["train_adversarial"].to_numpy() / beta
            tab.to_csv(path, index=False)
        tab = pd.read_csv(path)
    tab["train CE (cached run)"] = run.history["train_adversarial"].to_numpy() / run.model.cfg.beta
    return tab


def label_runs(runs: dict) -> pd.DataFrame:
    """The test records of several runs, ``{"name": TrainedRun or [TrainedRun, ...]}``, with ``model`` set to the
    name (several runs under one name, e.g. seeds, are averaged by the tables)."""
    parts = []
    for name, rs in runs.items():
        for r in rs if isinstance(rs, (list, tuple)) else [rs]:
            parts.append(r.records.assign(model=name))
    return pd.concat(parts, ignore_index=True)


__all__ += ["completeness_scores", "hyper_attention", "label_runs", "lnln_diagnostics", "lnln_parts",
            "one_modality_sweep", "reconstruction_curves", "spearman", "training_trace"]


# --------------------------------------------------------------------------------------------- ProMMA (chapters 3-5)
# The ablation of chapters 3-5: name -> (model, model_config overrides), one list in mechanisms_promma. Every chapter
# trains a variant through :func:`promma_variant`, so identical arguments give identical config hashes and the runs
# are shared.
from .mechanisms_promma import ABLATION as PROMMA_VARIANTS  # noqa: E402
_SHORT = {"text": "l", "audio": "a", "vision": "v"}


def promma_variant(name: str, epochs: int | None = None, seed: int = 1111, dataset: str = "synth", full: bool = False,
                   device: str = "auto", **kw) -> TrainedRun:
    """One row of :data:`PROMMA_VARIANTS`, trained (or reused) by :func:`trained`. ``"ProMMA"`` is the same run as
    ``trained("promma", epochs=epochs, seed=seed, dataset=dataset, full=full, device=device)``."""
    model, over = PROMMA_VARIANTS[name]
    return trained(model, epochs=epochs, seed=seed, dataset=dataset, full=full, device=device,
                   model_config=dict(over) or None, **kw)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def stage_model(run: TrainedRun, stage: str = "pretrain") -> torch.nn.Module:
    """The selected checkpoint of one stage of a two-stage run (ProMMA: ``"pretrain"`` or ``"adapt"``), in eval mode.
    The pretrain checkpoint is the frozen backbone that ProMMA's evaluator asks for its pseudo labels."""
    net, _ = load_checkpoint(run.dir / stage / "best.pt", run.data.spec, _model_device(run.model))
    return net.eval()


def stage_history(run: TrainedRun, metric: str = "MAE") -> pd.DataFrame:
    """Per epoch of both stages of a ProMMA run: stage, epoch (counted across the stages, from 1) and the validation
    ``metric`` that selected the stage's checkpoint (stage 1 scores complete data, stage 2 protocol B at its eta).
    ``run.history`` holds the last stage only; the first stage's log is read from its ``last.pt``."""
    parts = []
    for stage in ("pretrain", "adapt"):
        ck = torch.load(run.dir / stage / "last.pt", map_location="cpu", weights_only=False)
        h = pd.DataFrame(ck["history"])
        parts.append(pd.DataFrame({"stage": "1: pretrain (complete data)" if stage == "pretrain" else
                                   "2: adapt (protocol B)", f"valid {metric}": h[f"valid_{metric}"].astype(float).round(4)}))
    out = pd.concat(parts, ignore_index=True)
    out.insert(1, "epoch", np.arange(1, len(out) + 1))
    return out


def acc2_name(language: str = "en") -> str:
    """The binary accuracy a compact ProMMA table shows: non-0 for MOSI-style data, the SIMS Acc-2 for Chinese."""
    return "Acc-2" if language == "zh" else "Acc-2 non-0"


def modes_compare(runs: dict, metrics: list[str] | None = None, protocol: str = "B") -> pd.DataFrame:
    """Rows: the seven protocol-B missing modes (named by what is present) and the mean over the ten eta; columns:
    (metric, run name) for ``runs = {"name": TrainedRun, ...}``. Default metrics: MAE and Acc-2."""
    first = next(iter(runs.values()))
    metrics = metrics or ["MAE", acc2_name(first.data.spec.language)]
    rec = label_runs(runs)
    rows = {m: metrics_table(rec, protocol, mode=m, metrics=metrics).T.stack() for m in missing.MODE_NAMES}
    rows["mean over η"] = metrics_table(rec, protocol, level=None, metrics=metrics).T.stack()
    tab = pd.DataFrame(rows).T
    tab = tab[pd.MultiIndex.from_product([metrics, list(runs)])]
    tab.index.name = "present"
    return tab


def stages_table(run: TrainedRun, metrics: list[str] | None = None) -> pd.DataFrame:
    """The two stages of a ProMMA run on the test split, per protocol-B missing mode: the pretrained backbone
    (stage 1, trained on complete data only) and the adapted model (stage 2, the run's selected checkpoint)."""
    from .evaluate import evaluate

    metrics = metrics or ["MAE", acc2_name(run.data.spec.language)]
    net = stage_model(run, "pretrain")
    test = run.data["test"].data.to(_model_device(net))
    rec = run.records[(run.records.protocol == "B") & (run.records.setting == "mode")]
    rows = {}
    for k, name in enumerate(missing.MODE_NAMES):
        pre = evaluate(net, test, run.data.spec, "B", None, run.config.train.eval_seed, "test", mode=k)
        post = rec[rec["mode"] == name].set_index("metric").value
        rows[name] = {**{(m, "stage 1: pretrained"): pre[m] for m in metrics},
                      **{(m, "stage 2: adapted"): float(post[m]) for m in metrics}}
    tab = pd.DataFrame(rows).T
    tab = tab[pd.MultiIndex.from_product([metrics, ["stage 1: pretrained", "stage 2: adapted"]])]
    tab.index.name = "present"
    for c in tab.columns:
        pct = c[0].startswith(PERCENT_PREFIXES)
        tab[c] = (tab[c].astype(float) * (100 if pct else 1)).round(2 if pct else 3) + 0.0
    return tab


_MME_DECISIONS: dict[tuple, pd.DataFrame] = {}


def mme_decisions(run: TrainedRun, split: str = "test", batch_size: int = 64) -> pd.DataFrame:
    """What ProMMA's Missing Modality Evaluator decides on ``split`` under each incomplete protocol-B mode, one row
    per (mode, missing modality):

    - ``score``: the evaluator's mean s_m (NaN when the run has no evaluator);
    - ``generated (%)``: share of samples whose stand-in is used (the gate; 100 without an evaluator);
    - ``pseudo label 1 (%)``: share of samples for which the stand-in brings the FROZEN stage-1 backbone closer to
      its complete-input prediction than leaving the modality absent (the training target, computed here on the
      test split, whose complete data we have);
    - ``agreement (%)``: evaluator decision (s_m >= threshold) equal to the pseudo label;
    - ``stand-in error`` and ``input error``: mean squared error of the generated stand-in, and of what the encoders
      receive (gate x stand-in), against the real projected features of that modality, divided by the mean square
      of those features: 1 is the error of an all-zero stand-in (nothing generated).

    Computed once per run and split in a kernel (a copy is returned).
    """
    key = (str(run.dir), (run.dir / "best.pt").stat().st_mtime_ns, split)
    if key not in _MME_DECISIONS:
        _MME_DECISIONS[key] = _mme_decisions(run, split, batch_size)
    return _MME_DECISIONS[key].copy()


@torch.no_grad()
def _mme_decisions(run: TrainedRun, split: str, batch_size: int) -> pd.DataFrame:
    from .models.layers import masked_mean

    model = run.model
    model.eval()
    dev = _model_device(model)
    data = run.data[split].data.to(dev)
    unk = run.data.spec.unk_id
    teacher = stage_model(run, "pretrain")
    has_mme = bool(model.cfg.use_mme)
    old = model._teacher
    object.__setattr__(model, "_teacher", teacher)  # what start_adapt() snapshots; not saved in the checkpoint
    rows = []
    try:
        for k in range(1, len(missing.MODES)):
            plan = missing.draw("B", data, None, 0, 0, split, mode=k)
            acc = {}
            for start in range(0, len(data), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(data)), device=dev)
                b = missing.apply(data.take(idx), plan.take(idx.cpu()), unk)
                out = model(b)
                raw, masks, present = model._inputs(b)
                gen = model.generator(raw, masks, present)
                label = model.pseudo_labels(b, raw, masks, present, gen)
                raw_c, masks_c, _ = model._inputs(b.complete)
                for m in range(3):
                    if present[0, m]:
                        continue
                    target = model.proj[m](raw_c[m])  # (B, L, d) the real projected features
                    gate = out.extras["mme_gate"][:, m]
                    per = lambda x: masked_mean(x.pow(2).mean(-1, keepdim=True), masks_c[m]).squeeze(-1)  # noqa: E731
                    a = acc.setdefault(m, {k2: 0.0 for k2 in ("n", "score", "gate", "label", "agree", "err", "fed", "ref")})
                    a["n"] += len(idx)
                    a["gate"] += float(gate.sum())
                    a["label"] += float(label[:, m].sum())
                    if has_mme:
                        s = out.extras["mme_score"][:, m]
                        a["score"] += float(s.sum())
                        a["agree"] += float(((s >= model.cfg.mme_threshold).to(s.dtype) == label[:, m]).sum())
                    a["err"] += float(per(gen[m] - target).sum())
                    a["fed"] += float(per(gate[:, None, None] * gen[m] - target).sum())
                    a["ref"] += float(per(target).sum())
            for m, a in acc.items():
                rows.append({"present": missing.MODE_NAMES[k], "missing": missing.MODALITIES[m],
                             "score": a["score"] / a["n"] if has_mme else np.nan,
                             "generated (%)": 100 * a["gate"] / a["n"], "pseudo label 1 (%)": 100 * a["label"] / a["n"],
                             "agreement (%)": 100 * a["agree"] / a["n"] if has_mme else np.nan,
                             "stand-in error": a["err"] / a["ref"], "input error": a["fed"] / a["ref"]})
    finally:
        object.__setattr__(model, "_teacher", old)
    out = pd.DataFrame(rows)
    num = out.columns[2:]
    out[num] = out[num].astype(float).round(3) + 0.0
    return out.set_index(["present", "missing"])


def imputation_compare(runs: dict, split: str = "test") -> pd.DataFrame:
    """:func:`mme_decisions` of several runs side by side: per (mode, missing modality) the share of stand-ins
    used and the normalised error of what the encoders receive (1 = an all-zero stand-in)."""
    parts = {name: mme_decisions(r, split)[["generated (%)", "stand-in error", "input error"]] for name, r in runs.items()}
    tab = pd.concat(parts, axis=1).swaplevel(axis=1)
    return tab[pd.MultiIndex.from_product([["generated (%)", "stand-in error", "input error"], list(runs)])]


def same_pretrained_backbone(a: TrainedRun, b: TrainedRun) -> bool:
    """True when two ProMMA-family runs ended stage 1 with identical backbones (every backbone parameter and buffer
    of the two stage-1 checkpoints): their comparison then differs in stage 2 only. The prompts and modules, which
    stage 1 does not train, are not compared: their initial values depend on which modules a variant builds."""
    from .models.promma import BACKBONE

    sa = torch.load(a.dir / "pretrain" / "best.pt", map_location="cpu", weights_only=False)["model"]
    sb = torch.load(b.dir / "pretrain" / "best.pt", map_location="cpu", weights_only=False)["model"]
    shared = [k for k in sa if k.split(".")[0] in BACKBONE] + [k for k in sb if k.split(".")[0] in BACKBONE]
    shared = list(dict.fromkeys(shared))
    if any(k not in sa or k not in sb for k in shared):
        return False
    return bool(shared) and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in shared)


# ---- MPD (chapter 4)
def initial_model(run: TrainedRun) -> torch.nn.Module:
    """The run's model as it was before training: the same config, built after the same seeding as
    :func:`mmsa_core.experiment.run` (the global random state of the chapter is left as it was)."""
    from .experiment import model_config
    from .models import build_model

    t = run.config.train
    with preserved_rng():
        set_seed(t.seed, t.deterministic, None)
        net = build_model(run.config.model, model_config(run.config), run.data.spec)
    return net.to(_model_device(run.model)).eval()


PAIR_NAMES = ("D_l, D_a", "D_l, D_v", "D_a, D_v", "D_l, P_s", "D_a, P_s", "D_v, P_s")


@torch.no_grad()
def orth_terms(model) -> pd.Series:
    """The six terms of the orthogonality loss of a ProMMA model with MPD: for each pair (A, B) of the private parts
    D_m = U_m V_mᵀ and the shared prompt P_s, the mean squared cosine between the tokens of A and of B
    (= ||Â B̂ᵀ||_F² / L_p²). Their sum is ``model.orth_loss()``."""
    D = torch.nn.functional.normalize(model.private_delta(), dim=-1)  # (3, L_p, 2d)
    P = torch.nn.functional.normalize(model.shared_prompt, dim=-1)  # (L_p, 2d)
    pairs = [(D[0], D[1]), (D[0], D[2]), (D[1], D[2]), (D[0], P), (D[1], P), (D[2], P)]
    return pd.Series([float((a @ b.T).pow(2).mean()) for a, b in pairs], index=list(PAIR_NAMES), name="L_orth term")


def orth_table(run: TrainedRun, digits: int = 6) -> pd.DataFrame:
    """The terms of the orthogonality loss at initialisation and after training, and their sum."""
    tab = pd.DataFrame({"at initialisation": orth_terms(initial_model(run)), "after training": orth_terms(run.model)})
    tab.loc["L_orth (sum)"] = tab.sum()
    tab.index.name = "pair"
    return tab.round(digits) + 0.0


def loss_history(run: TrainedRun, term: str, weight: str | None = None) -> pd.DataFrame:
    """Per epoch of the last stage, the training loss ``term`` (``"orth"``, ``"mi"``, ``"mme"``, ``"gen"``) as the
    mean over the epoch's batches, divided by its weight ``lambda_<weight>`` so that the loss itself is shown."""
    lam = getattr(run.model.cfg, f"lambda_{weight or term}")
    h = run.history
    return pd.DataFrame({"epoch": h.epoch.astype(int) + 1, term: (h[f"train_{term}"] / lam).astype(float)})


@torch.no_grad()
def prompt_norms(model) -> pd.DataFrame:
    """Per modality: the mean token norm of the shared prompt P_s, of the private part D_m and their ratio, and the
    mean cosine between the tokens of P_m = P_s + D_m and of P_s."""
    P, D = model.shared_prompt, model.private_delta()
    rows = {}
    for i, m in enumerate(missing.MODALITIES):
        Pm = P + D[i]
        rows[m] = {"|P_s| per token": float(P.norm(dim=-1).mean()), "|D_m| per token": float(D[i].norm(dim=-1).mean()),
                   "|D_m| / |P_s|": float(D[i].norm(dim=-1).mean() / P.norm(dim=-1).mean()),
                   "cos(P_m, P_s)": float(torch.nn.functional.cosine_similarity(Pm, P, dim=-1).mean())}
    tab = pd.DataFrame(rows).T
    tab.index.name = "modality m"
    return tab.round(4) + 0.0


def _pca2(x: torch.Tensor) -> np.ndarray:
    """(n, k) -> (n, 2): the centred points on their first two principal axes (SVD; deterministic signs: the
    largest loading of each axis is positive)."""
    x = x.double()
    x = x - x.mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    v = vt[:2]
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return (x @ (v * sign).T).numpy()


@torch.no_grad()
def prompt_points(model, digits: int = 5) -> pd.DataFrame:
    """2-D PCA of the prompt tokens of MPD, tidy (panel, prompt, token, pc1, pc2). Panel "prompts": the L_p tokens
    of P_s and of each P_m = P_s + D_m, on the principal axes of all of them. Panel "private parts": the tokens of
    D_l, D_a, D_v on their own principal axes."""
    P, D = model.shared_prompt.detach().cpu(), model.private_delta().detach().cpu()
    Lp = P.shape[0]
    names = ["P_s"] + [f"P_{_SHORT[m]}" for m in missing.MODALITIES]
    full = torch.cat([P] + [P + D[i] for i in range(3)])
    parts = []
    for panel, pts, labels in (("prompts P_s and P_m", full, names),
                               ("private parts D_m", D.reshape(-1, D.shape[-1]), [f"D_{_SHORT[m]}" for m in missing.MODALITIES])):
        xy = _pca2(pts)
        parts.append(pd.DataFrame({"panel": panel, "prompt": np.repeat(labels, Lp), "token": np.tile(np.arange(1, Lp + 1), len(labels)),
                                   "pc1": xy[:, 0], "pc2": xy[:, 1]}))
    out = pd.concat(parts, ignore_index=True)
    out[["pc1", "pc2"]] = out[["pc1", "pc2"]].round(digits) + 0.0
    return out


@torch.no_grad()
def prompt_cosines(model, digits: int = 3) -> pd.DataFrame:
    """Cosine similarity between every pair of tokens of P_s, D_l, D_a, D_v (what the orthogonality loss pushes to
    zero between groups), as a square DataFrame labelled ``P_s 1``, ..., ``D_v 4``."""
    P, D = model.shared_prompt, model.private_delta()
    groups = [("P_s", P)] + [(f"D_{_SHORT[m]}", D[i]) for i, m in enumerate(missing.MODALITIES)]
    x = torch.nn.functional.normalize(torch.cat([g for _, g in groups]), dim=-1)
    labels = [f"{n} {j + 1}" for n, g in groups for j in range(len(g))]
    return pd.DataFrame((x @ x.T).double().numpy().round(digits) + 0.0, index=labels, columns=labels)


# ---- DPW and MPDC (chapter 5)
@torch.no_grad()
def dpw_weights(run: TrainedRun, split: str = "test") -> pd.DataFrame:
    """Mean DPW weight of each crossmodal stream under each protocol-B missing mode on ``split``, tidy (present,
    target, source, weight): for each target modality, the weights of its two streams sum to 1 per sample."""
    from .evaluate import predict

    data = run.data[split].data.to(_model_device(run.model))
    rows = []
    pairs = [(t, s) for t in missing.MODALITIES for s in missing.MODALITIES if s != t]  # l<-a, l<-v, a<-l, ...
    for k, name in enumerate(missing.MODE_NAMES):
        plan = missing.draw("B", data, None, 0, 0, split, mode=k)
        _, ex = predict(run.model, data, plan, run.data.spec.unk_id, extras=True)
        w = ex["dpw_weights"].double().mean(0)  # (3, 2)
        for i, (t, s) in enumerate(pairs):
            rows.append({"present": name, "target": t, "source": s, "weight": round(float(w[i // 2, i % 2]), 4) + 0.0})
    return pd.DataFrame(rows)


def mpdc_table(run: TrainedRun, eta: float = 0.7, n: int = 64) -> pd.DataFrame:
    """The MPDC gates g after training, one row per (memory encoder, layer), and the gradient of the sentiment loss
    with respect to each gate on ``n`` training samples under protocol B at ``eta`` (eval mode, on a copy of the
    model): a gate whose gradient is exactly 0 cannot move from its initial 0."""
    import copy

    net = copy.deepcopy(run.model).eval()
    dev = _model_device(net)
    data = run.data["train"].data.to(dev)
    idx = torch.arange(min(n, len(data)), device=dev)
    plan = missing.draw("B", data, eta, run.config.train.seed, 0, "train")
    b = missing.apply(data.take(idx), plan.take(idx.cpu()), run.data.spec.unk_id)
    net.zero_grad(set_to_none=True)
    with preserved_rng():
        net(b).losses["sentiment"].backward()
    scale = net.cfg.mpdc_gate_scale  # g = scale x the parameter: dL/dg = dL/dparameter / scale
    g, grad = net.mpdc_gates().detach().cpu(), net.mpdc_gate.grad
    grad = torch.zeros_like(g) if grad is None else grad.detach().cpu() / scale
    rows = [{"memory encoder": f"{m} ({_SHORT[m]})", "layer": j + 1, "gate g": float(g[i, j]),
             "dL/dg on a training batch": float(grad[i, j])}
            for i, m in enumerate(missing.MODALITIES) for j in range(g.shape[1])]
    return pd.DataFrame(rows).set_index(["memory encoder", "layer"]).round(6) + 0.0


def ablation_table(runs: dict, protocol: str = "B", metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per run of ``runs = {"name": TrainedRun}``: the headline metrics averaged over the ten test levels
    (eta for protocol B, r for A)."""
    first = next(iter(runs.values()))
    tab = metrics_table(label_runs(runs), protocol, level=None, metrics=metrics or headline_metrics(first.data.spec.language))
    tab.index.name = "variant"
    return tab


__all__ += ["PROMMA_VARIANTS", "ablation_table", "acc2_name", "dpw_weights", "imputation_compare",
            "initial_model", "loss_history", "mme_decisions", "modes_compare", "mpdc_table", "orth_table", "orth_terms",
            "prompt_cosines", "prompt_norms", "prompt_points", "promma_variant", "same_pretrained_backbone", "stage_history",
            "stage_model", "stages_table"]


# the ablations of LNLN (chapter 7): name -> the switches it turns off (``"almt"`` is the last one as a model name)
LNLN_ABLATIONS = {
    "without DMC": {"use_dmc": False},
    "without reconstructor": {"use_reconstructor": False},
    "without adversarial": {"use_adversarial": False},
    "ALMT-like (all off)": {"use_dmc": False, "use_reconstructor": False, "use_adversarial": False},
}


def ablation_switches(names=tuple(LNLN_ABLATIONS)) -> pd.DataFrame:
    """Which of LNLN's three parts each variant keeps (the full model first); the adversarial part needs DMC."""
    keys = ("use_dmc", "use_adversarial", "use_reconstructor")
    rows = {"LNLN": dict.fromkeys(keys, True)}
    for n in names:
        rows[n] = {k: LNLN_ABLATIONS[n].get(k, True) for k in keys}
        rows[n]["use_adversarial"] &= rows[n]["use_dmc"]  # the discriminator is part of DMC: off with it
    tab = pd.DataFrame(rows).T
    tab.index.name = "variant"
    return tab


def lnln_ablation(names=tuple(LNLN_ABLATIONS), seeds=(1111,), **kw) -> dict:
    """``{"LNLN": [runs], name: [runs], ...}``: the full model and each named variant of :data:`LNLN_ABLATIONS`,
    one :func:`trained` run per seed, every other argument (``epochs``, ``dataset``, ``full``, ``device``) the same.
    The variants start from the LNLN preset with the switches turned off, so they differ from LNLN only there
    (``trained("almt")`` would start from the ALMT preset instead). The full model's runs are those of
    ``trained("lnln", seed=s, **kw)``: shared with any chapter that makes the same call."""
    runs = {"LNLN": [trained("lnln", seed=s, **kw) for s in seeds]}
    for n in names:
        runs[n] = [trained("lnln", seed=s, model_config=dict(LNLN_ABLATIONS[n]), **kw) for s in seeds]
    return runs


def attention_summary(maps: dict) -> pd.DataFrame:
    """For attention maps ``{setting: {"audio": (layers, T, T), "vision": ...}}`` (see :func:`hyper_attention`): per
    modality and layer, the mean entropy of a query's weights relative to a uniform spread (1 = uniform), per
    setting, and the total variation distance between the first and the last setting (0 = the same weights)."""
    names = list(maps)
    rows = []
    for m in maps[names[0]]:
        for layer in range(maps[names[0]][m].shape[0]):
            row = {"modality": m, "layer": layer + 1}
            for s in names:
                p = np.clip(maps[s][m][layer], 1e-12, None)
                row[f"entropy, {s}"] = float((-(p * np.log(p)).sum(-1) / np.log(p.shape[-1])).mean())
            a, b = maps[names[0]][m][layer], maps[names[-1]][m][layer]
            row["total variation"] = float(0.5 * np.abs(a - b).sum(-1).mean())
            rows.append(row)
    return pd.DataFrame(rows).set_index(["modality", "layer"]).round(4) + 0.0


__all__ += ["LNLN_ABLATIONS", "ablation_switches", "attention_summary", "lnln_ablation"]


def reconstruction_crossover(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per modality, from :func:`lnln_diagnostics`: the lowest rate r > 0 at which the reconstructed tokens are closer
    to the complete input's than the incomplete tokens are ("never" when they are not at any rate of the table)."""
    rows = []
    for m in missing.MODALITIES:
        if f"rec. {m}" in diagnostics:
            wins = [r for r in diagnostics.index if r > 0 and diagnostics.at[r, f"rec. {m}"] < diagnostics.at[r, f"as is {m}"]]
            rows.append({"modality": m, "reconstruction closer from r =": f"{min(wins):.1f}" if wins else "never"})
    return pd.DataFrame(rows).set_index("modality")


__all__ += ["reconstruction_crossover"]


# ---------------------------------------------------------------------------- reference results (chapters 8-9)
def _language(ref) -> str:
    """``"zh"`` for a CH-SIMS grid (its own metrics), else ``"en"``."""
    return "zh" if str(ref.records["dataset"].iloc[0]) == "sims" else "en"


@dataclass
class Reference:
    """A results folder of the ``reproduce`` grid: its records, per-epoch histories and provenance."""

    dir: Path
    records: pd.DataFrame
    histories: pd.DataFrame
    provenance: dict


def reference_dir(results: str | Path | None = None) -> Path:
    """``results`` if given, else the committed grid of the embedded default: ``results/synth-small`` in the
    checkout (or under the current folder, e.g. a clone on Colab)."""
    if results is not None:
        return Path(results).expanduser()
    return (ROOT if is_checkout() else Path.cwd()) / "results" / "synth-small"


def reference(results: str | Path | None = None) -> Reference:
    """Load a grid's ``records.csv`` (validated), ``histories.csv`` and ``provenance.json``; a missing folder
    gets one error that says which command writes it."""
    from .results import load_histories, load_records

    d = reference_dir(results)
    if not (d / "records.csv").is_file():
        raise FileNotFoundError(f"{d / 'records.csv'} not found: run the grid first, e.g. "
                                f"`python -m mmsa_core reproduce --out {d}` (add --data PICKLE for real data)")
    prov = _read_json(d / "provenance.json") if (d / "provenance.json").is_file() else {}
    return Reference(d, load_records(d / "records.csv"), load_histories(d), prov)


def grid_summary(ref: Reference) -> pd.DataFrame:
    """One row per model of the grid: cells, training protocols, seeds, selected epochs and training time
    (from the provenance), and where the cells ran (commit, device, torch)."""
    cells = pd.DataFrame([{"cell": k, **{f: v.get(f) for f in ("commit", "device", "torch", "wall_s", "best_epoch")},
                           "model": v["config"]["model"], "protocol": v["config"]["train"]["protocol"],
                           "seed": v["config"]["train"]["seed"]} for k, v in ref.provenance.get("cells", {}).items()])
    if cells.empty:
        raise ValueError(f"{ref.dir / 'provenance.json'}: no cells")
    join = lambda s: ", ".join(map(str, dict.fromkeys(s)))  # noqa: E731
    rows = []
    for model, g in cells.groupby("model", sort=False):
        rows.append({"model": model, "cells": len(g), "trained under": join(sorted(g.protocol)),
                     "seeds": join(sorted(g.seed)),
                     "selected epoch (min-max)": f"{int(g.best_epoch.min())}-{int(g.best_epoch.max())}",
                     "training + sweeps (s, all cells)": round(float(g.wall_s.sum())),
                     "commit": join(g.commit), "device": join(g.device), "torch": join(g.torch)})
    return pd.DataFrame(rows).set_index("model")


def live_cell(ref: Reference, model: str = "baseline", protocol: str = "A", seed: int = 1111,
              metrics: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Re-train one cell of the grid now, with the configuration recorded for it, and compare it with its
    committed records. Returns a table (rows "committed" and "re-run now": each metric averaged over the ten
    test levels of the training protocol, rounded as the tables are) and a summary of the record-by-record
    comparison (the differences, if any, and the largest one)."""
    import tempfile

    from .reproduce import compare_records, rerun_cell

    with tempfile.TemporaryDirectory(prefix="mmsa-live-") as tmp, preserved_rng():
        new, old = rerun_cell(ref.dir, model, protocol, seed, out_dir=tmp)
    rows = {}
    for label, df in (("committed", old), ("re-run now", new)):
        d = df[(df.protocol == protocol) & (df.setting == "rate")]
        rows[label] = d.groupby("metric", sort=False).value.mean()
    tab = pd.DataFrame(rows).T[metrics or headline_metrics(_language(ref))]
    tab.index.name = f"{model}, trained under {protocol}, seed {seed}"
    differences = compare_records(new, old, ignore=("commit", "device"))  # exact, record by record
    gap = (new.value - old.value).abs().max() if len(new) == len(old) else float("nan")
    summary = {"records": len(old), "differences": differences or "none", "largest difference": float(gap)}
    return _percent(tab), summary


__all__ += ["Reference", "grid_summary", "live_cell", "reference", "reference_dir"]


# ------------------------------------------------------------------------------ benchmarks (performance appendix)
def benchmark_files(folder: str | Path | None = None) -> list[tuple[str, dict]]:
    """(file name, parsed JSON) of every benchmark file in ``folder`` (default ``benchmarks/results`` of the
    checkout), as the scripts in ``benchmarks/`` print them."""
    folder = Path(folder) if folder is not None else ROOT / "benchmarks" / "results"
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


__all__ += ["benchmark_files", "benchmark_table", "speedups"]


def reference_acc2(ref: Reference) -> str:
    """The binary accuracy a table of ``ref`` shows: ``Acc-2`` for CH-SIMS, ``Acc-2 non-0`` for the others."""
    return acc2_name(_language(ref))


def robustness_curves(ref: Reference, protocol: str = "A", metrics=("MAE",)) -> pd.DataFrame:
    """Tidy rows (model, level, value, std, metric) for :func:`mmsa_core.viz.curve`: each metric at every level of
    ``protocol`` for the models trained under it, mean and std over seeds (accuracy in %)."""
    trained_here = ref.records[ref.records.train_protocol == protocol]
    return pd.concat([at_rates(trained_here, m, protocol) for m in metrics], ignore_index=True)


def mode_means(ref: Reference, metric: str = "MAE", train_protocol: str = "B") -> pd.DataFrame:
    """Tidy rows (model, mode, value): ``metric`` under each protocol-B missing mode, mean over seeds."""
    from .results import mode_table

    wide = mode_table(ref.records, metric, train_protocols=[train_protocol], numeric=True)
    wide = wide.droplevel("train_protocol")
    return wide.reset_index().melt(id_vars="model", var_name="mode", value_name="value")


def optimism(ref: Reference, metrics=("MAE",)) -> pd.DataFrame:
    """How much better the best test epoch looks than the epoch selected on validation, per run type
    ("model (protocol)") and metric, mean over seeds; accuracy and F1 in percentage points."""
    from .results import selection_gap

    gap = selection_gap(ref.histories, metrics=list(metrics))
    pct = gap.metric.str.startswith(PERCENT_PREFIXES)
    gap["optimism"] = gap.optimism.where(~pct, gap.optimism * 100)
    gap["run"] = gap.model + " (" + gap.train_protocol + ")"
    mean = gap.groupby(["run", "metric"], sort=False).optimism.mean().unstack("metric")
    return mean[list(metrics)].reset_index()


__all__ += ["mode_means", "optimism", "reference_acc2", "robustness_curves"]
