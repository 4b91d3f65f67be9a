"""Models by name. Each entry: (config dataclass, model class); a model is built as ``cls(cfg, data_spec)``."""

from __future__ import annotations

from ..data.mmsa import DataSpec
from .baseline import BaselineConfig, LateFusionBaseline
from .common import ModelOutput
from .lnln import ALMTConfig, LNLN, LNLNAuthorsConfig, LNLNConfig
from .mplmm import MPLMMAuthors, MPLMMAuthorsConfig
from .promma import MPLMMConfig, ProMMA, ProMMAConfig

MODELS = {
    "baseline": (BaselineConfig, LateFusionBaseline),
    "promma": (ProMMAConfig, ProMMA),
    "mplmm": (MPLMMConfig, ProMMA),
    "lnln": (LNLNConfig, LNLN),
    "almt": (ALMTConfig, LNLN),
    # the authors' protocols (presets lnln_authors_* / mplmm_authors_*; chapter 11)
    "lnln_authors": (LNLNAuthorsConfig, LNLN),
    "mplmm_authors": (MPLMMAuthorsConfig, MPLMMAuthors),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model_class(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {model_names()}")
    return MODELS[name]


def build_model(name: str, cfg, spec: DataSpec):
    cfg_cls, cls = get_model_class(name)
    if not isinstance(cfg, cfg_cls):
        raise TypeError(f"model {name!r} takes a {cfg_cls.__name__}, got {type(cfg).__name__}")
    return cls(cfg, spec)


__all__ = ["MODELS", "ModelOutput", "build_model", "get_model_class", "model_names"]
