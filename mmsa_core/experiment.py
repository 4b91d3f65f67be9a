"""One training run end to end: data -> model -> fit -> test sweep -> tidy records on disk.

Files in ``out_dir``: ``config.yaml`` (the resolved config), ``last.pt`` (resume state), ``best.pt`` (the
selected checkpoint, with what is needed to rebuild the model), ``history.csv`` (per-epoch losses and
validation metrics), ``results.csv`` (tidy records) and ``provenance.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from .config import (ConfigError, DataConfig, RunConfig, check_model_config, check_run_config, config_hash, from_dict, load_config,
                     to_yaml)
from .data import synth
from .data.mmsa import DataError, DataSpec, MMSADataset, load_mmsa
from . import practices
from .evaluate import amp_dtype, model_inputs, sweep
from .models import build_model, get_model_class
from .models.common import Stage
from .distributed import is_main
from .train import fit
from .utils import CheckpointError, device_name, git_commit, load_checkpoint_file, resolve_device, run_folder_lock, set_seed

log = logging.getLogger(__name__)


def load_dataset(cfg: DataConfig) -> MMSADataset:
    """The embedded default (generated once, cached) or the user's MMSA pickle."""
    if cfg.dataset == "synth":
        return load_mmsa(synth.ensure(cfg.synth_shape, cfg.synth_seed, cfg.synth_variant),
                         name=cfg.name or synth.dataset_name(cfg.synth_shape, cfg.synth_variant),
                         label_range=cfg.label_range, family=cfg.family)
    return load_mmsa(cfg.dataset, name=cfg.name, label_range=cfg.label_range, family=cfg.family)


def model_config(cfg: RunConfig):
    try:
        cfg_cls, _ = get_model_class(cfg.model)
    except ValueError as e:  # unknown model: the message lists the registered ones
        raise ConfigError(f"model: {e}") from None
    mcfg = from_dict(cfg_cls, cfg.model_config, f"model_config ({cfg.model})")
    check_model_config(mcfg, f"model_config ({cfg.model})")
    return mcfg


def check_spec(expected: DataSpec, actual: DataSpec, where: str) -> None:
    """A model built for one data shape cannot read another: say which sizes differ."""
    diffs = [f"{k}: model expects {getattr(expected, k)}, data has {getattr(actual, k)}"
             for k in ("text_len", "text_dim", "audio_len", "audio_dim", "vision_len", "vision_dim")
             if getattr(expected, k) != getattr(actual, k)]
    if diffs:
        raise DataError(f"{where}: model and data do not match: " + "; ".join(diffs))


def check_token_ids(model: torch.nn.Module, ds: MMSADataset, where: str = "model") -> None:
    """Every ``text_bert`` token id must index the vocabulary of each text encoder of ``model`` that reads ids
    (a BERT: ``kind`` pretrained or tiny); checked when data and model meet, before any training or testing."""
    from .models.text import TextEncoder

    for name, mod in model.named_modules():
        if not isinstance(mod, TextEncoder) or mod.bert is None:
            continue
        vocab = int(mod.bert.config.vocab_size)
        for split, sp in ds.splits.items():
            ids = sp.data.text_ids
            bad = (ids < 0) | (ids >= vocab)
            if bad.any():
                i, j = (int(x[0]) for x in torch.nonzero(bad, as_tuple=True))
                raise DataError(
                    f"{ds.path}: split {split!r} key 'text_bert': token id {int(ids[i, j])} (sample {i}, "
                    f"position {j}) is outside the vocabulary of the text encoder {where}.{name} "
                    f"({vocab} ids, ids 0..{vocab - 1}); were the ids made with another tokenizer?")


def provenance(cfg: RunConfig, ds: MMSADataset, device: torch.device, **extra) -> dict:
    return {"commit": git_commit(), "config_hash": config_hash(cfg), "dataset": ds.name, "dataset_path": ds.path,
            "dataset_fingerprint": ds.fingerprint, "dataset_family": ds.spec.family,
            "dataset_family_source": ds.family_source, "device": device_name(device), "torch": torch.__version__, **extra}


def run(cfg: RunConfig, dataset: MMSADataset | None = None, restart: bool = False, forward_hook=None) -> pd.DataFrame:
    """Train (or resume) and evaluate one run; returns the tidy test records (also written to disk). The run
    holds its folder's lock throughout (a second run into the same folder stops at once: RunFolderBusy);
    ``restart`` ignores the folder's ``last.pt`` files and trains from epoch 0 (e.g. after a corrupt one);
    ``forward_hook``: held while each stage trains, not while the run is tested (see :func:`mmsa_core.train.fit`)."""
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone writes (and locks) the folder
        return _run(cfg, dataset, restart, forward_hook)
    with run_folder_lock(cfg.train.out_dir):
        return _run(cfg, dataset, restart, forward_hook)


def _run(cfg: RunConfig, dataset: MMSADataset | None, restart: bool, forward_hook=None) -> pd.DataFrame:
    check_run_config(cfg)  # load_config checked it; a config built or changed in code is checked here
    t = cfg.train
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(t.seed, t.deterministic, t.threads)
    ds = dataset or load_dataset(cfg.data)
    mcfg = model_config(cfg)
    model = build_model(cfg.model, mcfg, ds.spec)
    check_token_ids(model, ds)
    h = config_hash(cfg)
    if (out / "config.yaml").is_file() and any(out.rglob("last.pt")):  # never overwrite the config of another run
        old = config_hash(load_config(out / "config.yaml"))
        if old != h:
            raise RuntimeError(f"{out}: holds a run with config hash {old}, this run's is {h}; use another --out "
                               "folder (or delete that one) to start afresh")
    if is_main():  # rank 0 alone (also before the process group starts), atomically: another rank may read it
        tmp = out / "config.yaml.tmp"
        tmp.write_text(to_yaml(cfg))
        tmp.replace(out / "config.yaml")
    meta = {"model_name": cfg.model, "model_config": asdict(mcfg), "data_spec": asdict(ds.spec), "config_hash": h}
    t0 = time.perf_counter()
    stages = model.stages(t) if hasattr(model, "stages") else [Stage("main")]
    history = []  # every stage's per-epoch rows, with a "stage" column (the last stage's checkpoint is the run's)
    for st in stages:  # each stage resumes on its own; a finished stage only reloads its best weights
        if st.prepare is not None:
            st.prepare(model)
        st_cfg = replace(t, **st.train_overrides)
        st_out = out if len(stages) == 1 else out / st.name
        res = fit(model, ds, st_cfg, st_out, f"{h}-{st.name}", {**meta, "stage": st.name}, restart=restart,
                  forward_hook=forward_hook)
        history += [{"stage": st.name, **row} for row in res.history]
    if not is_main():  # under torchrun, rank 0 alone evaluates and writes the results
        return pd.DataFrame()
    device = next(model.parameters()).device  # under torchrun, this rank's device
    test = model_inputs(ds[t.report_split].data, model, device)  # report_split="valid": MPLMM's printout (a defect)
    amp = amp_dtype(device, t.amp, t.amp_dtype)
    if len(stages) > 1:  # the last stage's selected checkpoint is the run's
        import shutil

        shutil.copyfile(out / stages[-1].name / "best.pt", out / "best.pt")
    # every model is tested under both protocols ("train_protocol" says how it was trained), in one sweep so that
    # the passes the two share (the complete input) run once; compiled for evaluation when train.compile says so
    net = res.eval_model or model
    kw = dict(batch_size=t.eval_batch_size, amp=amp, nested=t.nested_test_masks, f1_swapped=t.f1_swapped,
              by_length=t.group_by_length)

    def both_protocols():
        return sweep(net, test, ds.spec, ("A", "B"), t.eval_seed, t.report_split, **kw)

    if t.select_per_metric:  # the LNLN authors': each metric group read from its own checkpoint
        records = []
        for key, rest in practices.groups(ds.spec.language).items():
            ck = load_checkpoint_file(Path(st_out) / "best_by" / f"{practices.slug(key)}.pt", map_location=device)
            model.load_state_dict(ck["model"])  # the compiled net (if any) shares these parameters
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
    ck = load_checkpoint_file(path, device)  # weights_only=True: tensors and plain values, never code
    if not {"model_name", "model_config", "data_spec", "model"} <= set(ck):
        raise CheckpointError(f"{path}: not a best.pt written by mmsa_core (no model_name, model_config, data_spec)")
    try:
        cfg_cls, _ = get_model_class(ck["model_name"])
        mcfg = from_dict(cfg_cls, ck["model_config"], f"{path} model_config")
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: its model cannot be rebuilt ({e})") from None
    try:
        saved = DataSpec(**ck["data_spec"])
    except TypeError as e:
        raise CheckpointError(f"{path}: data_spec does not describe data ({e})") from e
    if spec is not None:
        check_spec(saved, spec, str(path))
    model = build_model(ck["model_name"], mcfg, spec or saved)
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError, AttributeError) as e:  # missing / unexpected / wrongly shaped weights
        raise CheckpointError(f"{path}: its weights do not fit a {ck['model_name']} model with its model_config "
                              f"({str(e).splitlines()[0][:300]})") from e
    return model.to(device).eval(), ck


__all__ = ["load_checkpoint", "load_dataset", "run"]
