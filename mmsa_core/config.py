"""Configuration: dataclasses, loadable from YAML and overridable from the command line (``key.sub=value``),
and the run presets (``<model>_<preset>.yaml``) that ship with the package in ``mmsa_core/configs/``."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .utils import stable_hash


class ConfigError(ValueError):
    pass


PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # the presets shipped with the package


def config_dirs(configs: str | Path | None = None) -> list[Path]:
    """Folders searched for preset files, in order: ``configs`` alone if given; else ``$MMSA_CONFIGS``, the current
    folder's ``configs/`` (your own presets, which take precedence) and the package's presets."""
    if configs is not None:
        return [Path(configs).expanduser()]
    dirs = [Path(os.environ["MMSA_CONFIGS"]).expanduser()] if os.environ.get("MMSA_CONFIGS") else []
    dirs += [Path.cwd() / "configs", PRESETS_DIR]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def find_preset(name: str, dirs: list[Path] | None = None) -> Path | None:
    """The first ``<name>.yaml`` (e.g. ``lnln_default``) in ``dirs`` (default :func:`config_dirs`), or None."""
    for d in config_dirs() if dirs is None else dirs:
        p = d / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def preset_file(model: str, preset: str, dirs: list[Path] | None = None) -> Path | None:
    """The first ``<model>_<preset>.yaml`` in ``dirs`` (default :func:`config_dirs`), or None."""
    return find_preset(f"{model}_{preset}", dirs)


def _config_path(path: str | Path) -> Path:
    """A YAML file, or the bare name of a preset (``lnln_default``: no folder, no suffix) looked up by
    :func:`find_preset`; one error that names both when neither exists."""
    p = Path(path)
    if p.is_file():
        return p
    if len(p.parts) == 1 and not p.suffix:
        found = find_preset(p.name)
        if found is not None:
            return found
        raise ConfigError(f"{path}: no such config file and no preset {p.name}.yaml in "
                          f"{', '.join(map(str, config_dirs()))} (presets: "
                          f"{', '.join(sorted(f.stem for f in PRESETS_DIR.glob('*.yaml')))})")
    raise ConfigError(f"{p}: config file not found")


@dataclass
class DataConfig:
    dataset: str = "synth"  # "synth" (the embedded default) or the path of an MMSA pickle
    synth_shape: str = "small"  # "small" (CI-sized) or "mosi" (full MOSI shapes)
    synth_seed: int = 0
    synth_variant: str = "redundant"  # the testbed's variant: "redundant" or "complementary" (see data/synth.py)
    name: str | None = None  # name in results (default: "synth-<shape>-<variant>" or the file's stem)
    label_range: tuple[float, float] | None = None  # default: [-1, 1] for SIMS files, else [-3, 3]


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1  # linear warm-up over this fraction of the optimiser steps, then cosine to 0
    grad_clip: float | None = None
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a scaler); ignored on CPU
    compile: bool = False  # torch.compile the model (falls back to eager if compilation fails)
    seed: int = 1111
    protocol: str = "A"  # missing-data protocol used in training: "A" (token/frame) or "B" (whole modality)
    train_level: float | None = None  # A: None = per-sample random rates; B: eta (default 0.7)
    select_level: float | None = None  # validation corruption for model selection (default 0.5 for A, 0.7 for B)
    track_test: bool = False  # also score the TEST split each epoch at select_level (history only, never selects)
    eval_seed: int = 0  # seed of the test corruption: the same for every model and training seed
    eval_batch_size: int = 256
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = True
    progress: bool = True
    out_dir: str = "runs/default"
    # -- the authors' practices, one switch each (defaults = ours; mmsa_core/authors.py says what each one does) --
    schedule: str = "warmup_cosine"  # per optimiser step; "lnln_authors": per epoch, epoch 1 at lr 0; "plateau": MPLMM
    train_corruption: str = "fresh"  # a new draw per epoch; "frozen": the LNLN authors' (one draw for every epoch)
    nested_test_masks: bool = False  # True: one seed for every test rate (the LNLN authors'), so masks nest
    shuffle: bool = True  # False: training batches in file order (MPLMM)
    valid_redraw: bool = False  # True: a new validation corruption every epoch (MPLMM draws modes per item)
    select_split: str = "valid"  # "test": select checkpoints on the TEST split (the LNLN authors'; a defect)
    select_per_metric: bool = False  # True: one checkpoint per metric group (the LNLN authors'), not one for all
    f1_swapped: bool = False  # also record F1 called as f1_score(pred, truth) (both authors' code), labelled
    report_split: str = "test"  # "valid": report the validation split (MPLMM prints validation metrics; a defect)


# TrainConfig fields that leave a run's config hash unchanged at their default (added after the grid was run)
HASH_NEUTRAL = {"schedule": "warmup_cosine", "train_corruption": "fresh", "nested_test_masks": False, "shuffle": True,
                "valid_redraw": False, "select_split": "valid", "select_per_metric": False, "f1_swapped": False,
                "report_split": "test"}


@dataclass
class RunConfig:
    model: str = "baseline"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model_config: dict = field(default_factory=dict)  # overrides of the model's own config dataclass


def from_dict(cls, d: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from a dict, recursively; unknown keys are an error that lists the valid ones."""
    d = dict(d or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{k}: expected a mapping of {t.__name__} fields, got {v!r}")
            v = from_dict(t, v, f"{where}.{k}")
        elif typing.get_origin(t) in (tuple, typing.Union, types.UnionType, None) and isinstance(v, list):
            v = tuple(v)
        else:
            v = _check_scalar(t, v, f"{where}.{k}")
        kwargs[k] = v
    return cls(**kwargs)


_SCALARS = (bool, int, float, str)


def _check_scalar(t, v, where: str):
    """Check a value against a scalar annotation (bool, int, float, str, or one of them | None); any other
    annotation passes unchecked. YAML reads ``1e-4`` as a string (it wants ``1.0e-4``): a float field converts
    such strings; any other mismatch is a ConfigError that says what was expected."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if v is None and len(args) < len(typing.get_args(t)):
            return v
        if len(args) != 1:
            return v
        t = args[0]
    if t not in _SCALARS:
        return v
    number = isinstance(v, (int, float)) and not isinstance(v, bool)  # bool is an int subclass: not a number here
    ok = {float: number, int: number and isinstance(v, int), bool: isinstance(v, bool), str: isinstance(v, str)}
    if ok[t]:
        return v
    if t is float and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    if t is str and number:
        return str(v)
    raise ConfigError(f"{where}: expected {t.__name__}, got {v!r} ({type(v).__name__})")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["train.epochs=3", "model_config.text.kind=tiny"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, val = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(val)
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """A :class:`RunConfig` from a YAML file or a preset name (see :func:`_config_path`), with ``overrides``."""
    d = {}
    if path:
        p = _config_path(path)
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(d).__name__}")
    return from_dict(RunConfig, merge(d, overrides or {}), str(path or "config"))


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that changes the results (not where they go, nor progress bars or the device)."""
    d = asdict(cfg)
    for k in ("out_dir", "progress", "device", "eval_batch_size"):
        d["train"].pop(k, None)
    if not d["train"].get("track_test"):  # off (the default) leaves the hashes of existing runs unchanged
        d["train"].pop("track_test", None)
    for k, default in HASH_NEUTRAL.items():
        if d["train"].get(k, default) == default:
            d["train"].pop(k, None)
    return stable_hash(d)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
