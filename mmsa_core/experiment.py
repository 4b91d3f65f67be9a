"""One training run end to end: data -> model -> fit -> test sweep -> tidy records on disk.

Files in ``out_dir``: ``config.yaml`` (the resolved config), ``last.pt`` (resume state), ``best.pt`` (the
selected checkpoint, with what is needed to rebuild the model), ``history.csv`` (per-epoch losses and
validation metrics), ``results.csv`` (tidy records) and ``provenance.json``.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from .config import DataConfig, RunConfig, config_hash, from_dict, load_config, to_yaml
from .data import synth
from .data.mmsa import DataError, DataSpec, MMSADataset, load_mmsa
from . import practices
from .evaluate import sweep
from .models import build_model, get_model_class
from .models.common import Stage
from .distributed import is_main
from .train import fit
from .utils import device_name, git_commit, resolve_device, set_seed

log = logging.getLogger(__name__)


def load_dataset(cfg: DataConfig) -> MMSADataset:
    """The embedded default (generated once, cached) or the user's MMSA pickle."""
    if cfg.dataset == "synth":
        ds = load_mmsa(synth.ensure(cfg.synth_shape, cfg.synth_seed, cfg.synth_variant),
                       name=cfg.name or synth.dataset_name(cfg.synth_shape, cfg.synth_variant))
    else:
        ds = load_mmsa(cfg.dataset, name=cfg.name, label_range=cfg.label_range)
    return ds


def model_config(cfg: RunConfig):
    cfg_cls, _ = get_model_class(cfg.model)
    return from_dict(cfg_cls, cfg.model_config, f"model_config ({cfg.model})")


def check_spec(expected: DataSpec, actual: DataSpec, where: str) -> None:
    """A model built for one data shape cannot read another: say which sizes differ."""
    diffs = [f"{k}: model expects {getattr(expected, k)}, data has {getattr(actual, k)}"
             for k in ("text_len", "text_dim", "audio_len", "audio_dim", "vision_len", "vision_dim")
             if getattr(expected, k) != getattr(actual, k)]
    if diffs:
        raise DataError(f"{where}: model and data do not match: " + "; ".join(diffs))


def provenance(cfg: RunConfig, ds: MMSADataset, device: torch.device, **extra) -> dict:
    return {"commit": git_commit(), "config_hash": config_hash(cfg), "dataset": ds.name, "dataset_path": ds.path,
            "dataset_fingerprint": ds.fingerprint, "device": device_name(device), "torch": torch.__version__, **extra}


def run(cfg: RunConfig, dataset: MMSADataset | None = None) -> pd.DataFrame:
    """Train (or resume) and evaluate one run; returns the tidy test records (also written to disk)."""
    t = cfg.train
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(t.seed, t.deterministic, t.threads)
    ds = dataset or load_dataset(cfg.data)
    mcfg = model_config(cfg)
    model = build_model(cfg.model, mcfg, ds.spec)
    h = config_hash(cfg)
    if (out / "config.yaml").is_file() and any(out.rglob("last.pt")):  # never overwrite the config of another run
        old = config_hash(load_config(out / "config.yaml"))
        if old != h:
            raise RuntimeError(f"{out}: holds a run with config hash {old}, this run's is {h}; use another --out "
                               "folder (or delete that one) to start afresh")
    if is_main():
        (out / "config.yaml").write_text(to_yaml(cfg))
    meta = {"model_name": cfg.model, "model_config": asdict(mcfg), "data_spec": asdict(ds.spec), "config_hash": h}
    t0 = time.perf_counter()
    stages = model.stages(t) if hasattr(model, "stages") else [Stage("main")]
    history = []  # every stage's per-epoch rows, with a "stage" column (the last stage's checkpoint is the run's)
    for st in stages:  # each stage resumes on its own; a finished stage only reloads its best weights
        if st.prepare is not None:
            st.prepare(model)
        st_cfg = replace(t, **st.train_overrides)
        st_out = out if len(stages) == 1 else out / st.name
        res = fit(model, ds, st_cfg, st_out, f"{h}-{st.name}", {**meta, "stage": st.name})
        history += [{"stage": st.name, **row} for row in res.history]
    if not is_main():  # under torchrun, rank 0 alone evaluates and writes the results
        return pd.DataFrame()
    device = next(model.parameters()).device  # under torchrun, this rank's device
    test = ds[t.report_split].data.to(device)  # report_split="valid": MPLMM's printout (a defect), never our rows
    amp = t.amp and device.type == "cuda"
    if len(stages) > 1:  # the last stage's selected checkpoint is the run's
        import shutil

        shutil.copyfile(out / stages[-1].name / "best.pt", out / "best.pt")
    kw = dict(batch_size=t.eval_batch_size, amp=amp, nested=t.nested_test_masks, f1_swapped=t.f1_swapped)

    def both_protocols():  # every model is tested under both protocols; "train_protocol" says how it was trained
        return [r for proto in ("A", "B") for r in sweep(model, test, ds.spec, proto, t.eval_seed, t.report_split, **kw)]

    if t.select_per_metric:  # the LNLN authors': each metric group read from its own checkpoint
        records = []
        for key, rest in practices.groups(ds.spec.language).items():
            ck = torch.load(Path(st_out) / "best_by" / f"{practices.slug(key)}.pt", map_location=device, weights_only=False)
            model.load_state_dict(ck["model"])
            records += [{**r, "selected_epoch": ck["epoch"]} for r in both_protocols() if r["metric"] in (key, *rest)]
    else:
        records = [{**r, "selected_epoch": res.best_epoch} for r in both_protocols()]
    df = pd.DataFrame(records)
    prov = provenance(cfg, ds, device, wall_s=round(time.perf_counter() - t0, 2), best_epoch=res.best_epoch,
                      resumed_from=res.resumed_from)
    df.insert(0, "model", cfg.model)
    df.insert(1, "dataset", ds.name)
    df.insert(2, "train_protocol", t.protocol)
    df.insert(3, "seed", t.seed)
    for k in ("commit", "config_hash", "device"):
        df[k] = prov[k]
    df.to_csv(out / "results.csv", index=False)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2))
    return df


def load_checkpoint(path, spec: DataSpec | None = None, device="cpu"):
    """Rebuild the model saved in ``best.pt``; with ``spec``, check that it fits the data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as e:  # not a torch file, or cut short
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ck, dict) or "model_name" not in ck:
        raise ValueError(f"{path}: not a best.pt written by mmsa_core (no model_name)")
    cfg_cls, _ = get_model_class(ck["model_name"])
    mcfg = from_dict(cfg_cls, ck["model_config"], f"{path} model_config")
    saved = DataSpec(**ck["data_spec"])
    if spec is not None:
        check_spec(saved, spec, str(path))
    model = build_model(ck["model_name"], mcfg, spec or saved)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


__all__ = ["load_checkpoint", "load_dataset", "run"]
