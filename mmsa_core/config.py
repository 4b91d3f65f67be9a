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
    """A bad configuration: the message names the file or override and the key, what was expected and found."""


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
    family: str | None = None  # "mosi", "mosei" or "sims"; None: decided from the data (mmsa_core.data.mmsa)
    label_range: tuple[float, float] | None = None  # default: the family's ([-1, 1] for SIMS, else [-3, 3])


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1  # linear warm-up over this fraction of the optimiser steps, then cosine to 0
    grad_clip: float | None = None
    amp: bool = True  # mixed precision on CUDA (native bf16 where supported, else fp16 with a scaler); not on CPU
    # "auto" (as ``amp`` says), or force "bf16" / "fp16" (also on the CPU: fp16 with a GradScaler) or "fp32".
    # Like ``device``, not part of the config hash: a run may resume in another precision (or on another machine)
    amp_dtype: str = "auto"
    compile: bool = False  # torch.compile the model (falls back to eager if compilation fails)
    seed: int = 1111
    protocol: str = "A"  # missing-data protocol used in training: "A" (token/frame) or "B" (whole modality)
    train_level: float | None = None  # A: None = per-sample random rates; B: eta (default 0.7)
    select_level: float | None = None  # validation corruption for model selection (default 0.5 for A, 0.7 for B)
    track_test: bool = False  # also score the TEST split each epoch at select_level (history only, never selects)
    group_by_length: bool = False  # batches of samples of similar length (seeded per epoch); evaluation sorted by length
    eval_seed: int = 0  # seed of the test corruption: the same for every model and training seed
    eval_batch_size: int = 256
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = True
    progress: bool = True
    out_dir: str = "runs/default"
    # -- the authors' practices, one switch each (defaults = ours; mmsa_core/practices.py says what each one does) --
    schedule: str = "warmup_cosine"  # per optimiser step; "lnln_authors": per epoch, epoch 1 at lr 0; "plateau": MPLMM
    train_corruption: str = "fresh"  # a new draw per epoch; "frozen": the LNLN authors' (one draw for every epoch)
    nested_test_masks: bool = False  # True: one seed for every test rate (the LNLN authors'), so masks nest
    shuffle: bool = True  # False: training batches in file order (MPLMM)
    valid_redraw: bool = False  # True: a new validation corruption every epoch (MPLMM draws modes per item)
    select_split: str = "valid"  # "test": select checkpoints on the TEST split (the LNLN authors'; a defect)
    select_per_metric: bool = False  # True: one checkpoint per metric group (the LNLN authors'), not one for all
    f1_swapped: bool = False  # also record F1 called as f1_score(pred, truth) (both authors' code), labelled
    report_split: str = "test"  # "valid": report the validation split (MPLMM prints validation metrics; a defect)


# the values each practice switch may take (the first is ours); mmsa_core/practices.py implements them
PRACTICE_CHOICES = {"schedule": ("warmup_cosine", "lnln_authors", "plateau"), "train_corruption": ("fresh", "frozen"),
                    "select_split": ("valid", "test"), "report_split": ("test", "valid")}
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
    unknown = sorted(map(str, set(d) - set(names)))
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
        elif t is dict or typing.get_origin(t) is dict:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{k}: expected a mapping, got {v!r}")
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
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is set to a value above, not a section")
        try:
            node[leaf] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(e)})") from None
    return out


def _yaml_problem(e: "yaml.YAMLError") -> str:
    """Line, column (1-based) and problem of a YAML error, in one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


def read_yaml(path: Path) -> dict:
    """The mapping in a YAML config file; a malformed file is one ConfigError with its file, line and column."""
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML at {_yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    d = d or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(d).__name__}")
    return d


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """A :class:`RunConfig` from a YAML file or a preset name (see :func:`_config_path`), with ``overrides``."""
    d = read_yaml(_config_path(path)) if path else {}
    where = str(path or "config")
    cfg = from_dict(RunConfig, merge(d, overrides or {}), where)
    check_run_config(cfg, where)
    from .models import MODELS  # the model's own config dataclass, checked here too (before any run)

    if cfg.model in MODELS:  # an unknown model is reported when the run builds it, with the registered names
        mwhere = f"{where}: model_config ({cfg.model})"
        check_model_config(from_dict(MODELS[cfg.model][0], cfg.model_config, mwhere), mwhere)
    return cfg


# ------------------------------------------------------------------------------------------ validation
def _fail(where: str, expected: str, v) -> None:
    raise ConfigError(f"{where}: expected {expected}, got {v!r}")


def _number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(where: str, v, kind: str, lo=None, hi=None, lo_open=False, hi_open=False, none_ok=False) -> None:
    """``v`` is an int (``kind`` "int") or a finite number ("float") in [lo, hi] (open ends where asked)."""
    if v is None and none_ok:
        return
    ok = _number(v) and (kind != "int" or isinstance(v, int))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{')' if hi_open else ']'}"
        _fail(where, f"{'an integer' if kind == 'int' else 'a number'} in {rng}" + (" or null" if none_ok else ""), v)


def check_run_config(cfg: "RunConfig", where: str = "config") -> None:
    """Every train.* and data.* field in range (positive sizes, lr > 0, known protocol, ...), else a ConfigError
    that names the key: a run that would train nothing or fail later is refused before it starts."""
    if not isinstance(cfg.model, str):
        _fail(f"{where}: model", "a model name", cfg.model)
    t, d = cfg.train, cfg.data
    w = f"{where}: train."
    _check(w + "epochs", t.epochs, "int", 1)
    _check(w + "batch_size", t.batch_size, "int", 1)
    _check(w + "eval_batch_size", t.eval_batch_size, "int", 1)
    _check(w + "lr", t.lr, "float", 0, lo_open=True)
    _check(w + "weight_decay", t.weight_decay, "float", 0)
    _check(w + "warmup_frac", t.warmup_frac, "float", 0, 1)
    _check(w + "grad_clip", t.grad_clip, "float", 0, lo_open=True, none_ok=True)
    _check(w + "train_level", t.train_level, "float", 0, 1, none_ok=True)
    _check(w + "select_level", t.select_level, "float", 0, 1, none_ok=True)
    _check(w + "threads", t.threads, "int", 1, none_ok=True)
    for k in ("seed", "eval_seed"):
        _check(w + k, getattr(t, k), "int", 0)
    if t.protocol not in ("A", "B"):
        _fail(w + "protocol", "'A' or 'B'", t.protocol)
    for k in ("amp", "compile", "deterministic", "progress", "track_test", "group_by_length",
              "nested_test_masks", "shuffle", "valid_redraw", "select_per_metric", "f1_swapped"):
        if not isinstance(getattr(t, k), bool):
            _fail(w + k, "true or false", getattr(t, k))
    for k, allowed in PRACTICE_CHOICES.items():
        if getattr(t, k) not in allowed:
            _fail(w + k, f"one of {list(allowed)}", getattr(t, k))
    if not isinstance(t.out_dir, str) or not t.out_dir.strip():
        _fail(w + "out_dir", "a folder name", t.out_dir)
    if not isinstance(t.device, str):
        _fail(w + "device", "auto, cpu, cuda or cuda:N", t.device)
    if t.device != "auto":
        import torch

        try:
            torch.device(t.device)
        except (RuntimeError, ValueError):
            _fail(w + "device", "auto, cpu, cuda or cuda:N", t.device)
    w = f"{where}: data."
    if not isinstance(d.dataset, str) or not d.dataset.strip():
        _fail(w + "dataset", "'synth' or the path of an MMSA pickle", d.dataset)
    from .data.mmsa import FAMILIES

    if d.family is not None and d.family not in FAMILIES:
        _fail(w + "family", f"one of {sorted(FAMILIES)} or null (decided from the data)", d.family)
    if d.dataset == "synth":
        from .data.synth import SHAPES, VARIANTS

        if d.synth_shape not in SHAPES:
            _fail(w + "synth_shape", f"one of {sorted(SHAPES)}", d.synth_shape)
        if d.synth_variant not in VARIANTS:
            _fail(w + "synth_variant", f"one of {sorted(VARIANTS)}", d.synth_variant)
        _check(w + "synth_seed", d.synth_seed, "int", 0)
    lr_ = d.label_range
    if lr_ is not None and not (isinstance(lr_, tuple) and len(lr_) == 2 and all(map(_number, lr_)) and lr_[0] < lr_[1]):
        _fail(w + "label_range", "[low, high] with low < high, or null (the family's)", lr_)
    if d.name is not None and not isinstance(d.name, str):
        _fail(w + "name", "a string", d.name)


# Field-name rules for the models' config dataclasses (one place for every model): sizes are >= 1, depths >= 0,
# dropouts in [0, 1), temperatures and scales > 0, loss weights >= 0, stage epochs >= 1 and lrs > 0 when set.
_SIZE_WORDS = ("dim", "heads", "hidden", "tokens", "ratio", "len", "rank", "vocab_size")


def check_model_config(mcfg, where: str) -> None:
    """Check a model's config dataclass by its field names (see the rules above), recursively; the widths a
    multi-head attention splits must divide by the heads. A ConfigError names the key."""
    vals = {f.name: getattr(mcfg, f.name) for f in dataclasses.fields(mcfg)}
    for k, v in vals.items():
        key = f"{where}.{k}"
        if dataclasses.is_dataclass(v):
            check_model_config(v, key)
        elif isinstance(v, bool) or isinstance(v, (str, tuple, list, dict)):
            continue
        elif k.endswith("depth") or k.endswith("layers"):
            _check(key, v, "int", 0)
        elif k.endswith("epochs"):
            _check(key, v, "int", 1, none_ok=True)
        elif k == "lr" or k.endswith("_lr"):
            _check(key, v, "float", 0, lo_open=True, none_ok=True)
        elif "dropout" in k:
            _check(key, v, "float", 0, 1, hi_open=True, none_ok=True)
        elif k.endswith("temperature") or k.endswith("scale"):
            _check(key, v, "float", 0, lo_open=True)
        elif k.startswith("lambda_") or k in ("alpha", "beta", "gamma", "sigma"):
            _check(key, v, "float", 0)
        elif any(w in k for w in _SIZE_WORDS) and (v is None or isinstance(v, int)):
            _check(key, v, "int", 1, none_ok=v is None)
    for width, heads in (("dim", "heads"), ("tiny_hidden", "tiny_heads"), ("dim", "hyper_dim_head")):
        if "dim_head" in vals and width == "dim" and heads == "heads":
            continue  # heads x dim_head need not equal dim
        if isinstance(vals.get(width), int) and isinstance(vals.get(heads), int) and vals[heads] > 0 \
                and vals[width] % vals[heads]:
            raise ConfigError(f"{where}.{width}: expected a multiple of {heads} = {vals[heads]}, got {vals[width]}")
    for lever in ("trim_padding", "drop_masked"):  # LNLN: unmasked attention, the padding counts
        if vals.get(lever) is True and vals.get("mask_attention") is False:
            raise ConfigError(f"{where}.{lever}: expected false with mask_attention false (unmasked attention "
                              "attends to the padding, so cutting it changes the result), got true")


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that changes the results (not where they go, nor progress bars or the device)."""
    d = asdict(cfg)
    for k in ("out_dir", "progress", "device", "eval_batch_size", "amp_dtype"):
        d["train"].pop(k, None)
    for k in ("track_test", "group_by_length"):  # off (the default) leaves the hashes of existing runs unchanged
        if not d["train"].get(k):
            d["train"].pop(k, None)
    for k, default in HASH_NEUTRAL.items():  # the authors' practices at our defaults: likewise
        if d["train"].get(k, default) == default:
            d["train"].pop(k, None)
    if d["data"].get("family") is None:  # likewise data.family unset (decided from the data)
        d["data"].pop("family", None)
    return stable_hash(d)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
