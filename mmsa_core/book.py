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

Presets: a run starts from ``configs/<model>_<preset>.yaml`` where that file exists, else from the model's own
defaults. ``<preset>`` is ``default`` (sized for the embedded data on a CPU) on the embedded data, ``mosi`` on its
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
from .config import DataConfig, RunConfig, config_hash, load_config
from .data.mmsa import MMSADataset
from .experiment import load_checkpoint, load_dataset, run
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


def config_dirs() -> list[Path]:
    """Folders searched for preset YAML files, in order: ``$MMSA_CONFIGS``, the checkout's ``configs/``, the
    current folder's (and its parent's) ``configs/``, and ``mmsa_core/configs/`` if the package ships one."""
    dirs = [Path(os.environ["MMSA_CONFIGS"]).expanduser()] if os.environ.get("MMSA_CONFIGS") else []
    dirs += [ROOT / "configs", Path.cwd() / "configs", Path.cwd().parent / "configs", PACKAGE / "configs"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


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
    """``configs/<model>_<preset>.yaml`` (see :func:`preset_name`); for a real file whose dataset has no preset,
    ``configs/<model>_default.yaml``; None when there is none (the model's own defaults are used)."""
    real = str(dataset) != "synth"
    names = [f"{model}_{preset_name(dataset, full)}.yaml"]
    if real and names[0] != f"{model}_default.yaml":
        names.append(f"{model}_default.yaml")
    for k, name in enumerate(names):
        for d in config_dirs():
            if (d / name).is_file():
                if k:
                    log.warning("no preset %s: using %s, which is sized for the embedded data", names[0], d / name)
                return d / name
    if real or full:
        log.warning("no preset %s in %s: using the model's defaults", " or ".join(names),
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
        history = pd.read_csv(folder / "history.csv")
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
