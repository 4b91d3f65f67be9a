"""Every mechanism measured against the testbed's truth, written to ``results/<set>/mechanisms.json``.

**ours**: neither paper measures its modules against a ground truth; only a generated dataset has one. Each key of
the file holds one mechanism's numbers on one variant of the testbed, per seed and as mean and std over seeds:

- ``lnln_dmc``: LNLN's dominant modality correction. Does the completeness score w track the TRUE text corruption
  (Spearman over the test samples under protocol A's training draw, and its mean at r = 0, 0.5, 0.9)? Does the
  proxy language feature, made from audio and vision alone, carry the TRUE text sentiment (test R^2 of a ridge
  probe fitted on train), compared with what audio and vision make recoverable at all (the mean predictability of
  the text content, from the truth) and with the complete language feature?
- ``lnln_reconstructor``: with one modality missing (protocol B), the reconstructor's error on each sample
  against that modality's TRUE predictability from the other two (Spearman: negative when the reconstructor does
  best where the truth says reconstruction is possible), and its mean error against the incomplete tokens as is.
- ``lnln_ablation``: LNLN and each row of :data:`LNLN_ABLATION_ROWS` (the LNLN preset with parts switched off),
  trained under protocol A like the grid's ``lnln`` cells (the full model IS that cell): each test metric averaged
  over the ten rates r, per seed, under the names ``<row>.<metric>``.
- ``standins``: on the grid's ProMMA cells (protocol B), how much of a missing modality's TRUE content the
  generated stand-in carries (:func:`mmsa_core.mechanisms_promma.measure_standins`).
- ``mme``, ``mpd``, ``dpw``, ``dpw_decoders``, ``mpdc``, ``ablation``: ProMMA's modules
  (:mod:`mmsa_core.mechanisms_promma`, which trains its ablation rows itself, one shared first stage per seed).

LNLN's trained models are the reference grid's own cells (``<results>/runs/<model>-<protocol>-<seed>``): a cell that
the grid has finished is loaded, one that it has not is trained there first, with the grid's configuration.
Command line: ``python -m mmsa_core mechanisms --help``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from . import missing
from .metrics import ridge_r2, spearman
from .data import synth
from .data.mmsa import MMSADataset

log = logging.getLogger(__name__)

KEYS = ("mme", "standins", "mpd", "dpw", "dpw_decoders", "mpdc", "ablation", "lnln_dmc", "lnln_reconstructor", "lnln_ablation")
# LNLN's ablation (chapter 7): name -> the switches of the LNLN preset it turns off (the adversarial part needs DMC)
LNLN_ABLATION = {
    "without DMC": {"use_dmc": False},
    "without reconstructor": {"use_reconstructor": False},
    "without adversarial": {"use_adversarial": False},
    "ALMT-like (all off)": {"use_dmc": False, "use_reconstructor": False, "use_adversarial": False},
}
# the rows measured into mechanisms.json (chapter 7's default; "without adversarial" is one parameter away there)
LNLN_ABLATION_ROWS = ("without DMC", "without reconstructor", "ALMT-like (all off)")
LNLN_ABLATION_METRICS = ("MAE", "Acc-2 non-0", "F1 non-0", "Corr")


# ------------------------------------------------------------------------------------------------ helpers

def entry(variant: str, per_seed: dict[int, dict]) -> dict:
    """One key of mechanisms.json: the numbers per seed, and the mean and std over seeds of each number (nested
    dicts are flattened to ``a.b`` names)."""

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = float(v)
        return out

    flats = {s: flat(v) for s, v in per_seed.items()}
    names = sorted(set().union(*flats.values())) if flats else []
    vals = {n: [f[n] for f in flats.values() if n in f] for n in names}
    return {"variant": variant, "seeds": sorted(int(s) for s in per_seed),
            "per_seed": {str(s): v for s, v in sorted(per_seed.items())},
            "mean": {n: float(np.mean(v)) for n, v in vals.items()},
            "std": {n: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for n, v in vals.items()}}


def write(path, entries: dict[str, dict], meta: dict | None = None) -> Path:
    """Merge ``entries`` (key -> :func:`entry`) into the JSON file at ``path`` (other keys are kept)."""
    path = Path(path)
    unknown = sorted(set(entries) - set(KEYS))
    if unknown:
        raise ValueError(f"mechanisms.json: unknown key(s) {unknown}; expected some of {list(KEYS)}")
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.update(meta or {})
    doc.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no mechanisms file; write it with `python -m mmsa_core mechanisms`")
    return json.loads(path.read_text())


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _lnln_parts(model, data, plan, unk_id: int, batch_size: int = 256, incomplete: bool = True, complete: bool = True):
    """Per sample: incomplete and complete embeddings (h_l, h_a, h_v), (c_l, c_a, c_v) of ``data`` under ``plan``;
    a part not asked for (``incomplete`` / ``complete`` False) is not computed and comes back as None."""
    dev = _device(model)
    model.eval()
    inc, com = [[], [], []], [[], [], []]
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        b = missing.apply(data.take(idx).to(dev), plan.take(idx), unk_id)
        for acc, want, batch in ((inc, incomplete, b), (com, complete, b.complete)):
            if want:
                for i, e in enumerate(model.embed_batch(batch)):
                    acc[i].append(e.float())
    return (tuple(torch.cat(x) for x in inc) if incomplete else None,
            tuple(torch.cat(x) for x in com) if complete else None)


# ----------------------------------------------------------------------------------------------- LNLN

@torch.no_grad()
def lnln_dmc(model, ds: MMSADataset, truth: dict) -> dict:
    """LNLN's completeness check and proxy feature against the truth (see the module docstring)."""
    unk = ds.spec.unk_id
    test, train = ds["test"].data, ds["train"].data
    out = {}
    plan = missing.protocol_a(test, None, 0, 0, "test")  # the training distribution: every sample its own rate
    (h_l, h_a, h_v), _ = _lnln_parts(model, test, plan, unk, complete=False)
    w = model.completeness(h_l).cpu().numpy()
    out["spearman_w_vs_text_drop"] = spearman(w, plan.rates[:, 0].numpy())
    for r in (0.0, 0.5, 0.9):
        (h, _, _), _ = _lnln_parts(model, test, missing.protocol_a(test, r, 0, 0, "test"), unk, complete=False)
        out[f"w_at_r{r}"] = float(model.completeness(h).mean())
    # the proxy from COMPLETE audio and vision: what the generator makes of them, probed for the text sentiment
    feats = {}
    for split, data in (("train", train), ("test", test)):
        none = missing.protocol_a(data, 0.0, 0, 0, split)
        _, (c_l, c_a, c_v) = _lnln_parts(model, data, none, unk, incomplete=False)
        feats[split] = {"proxy": model.proxy(c_a, c_v).mean(1).cpu().numpy(), "language": c_l.mean(1).cpu().numpy()}
    y_tr, y_te = truth["train"]["content_text"], truth["test"]["content_text"]
    out["proxy_text_sentiment_r2"] = ridge_r2(feats["train"]["proxy"], y_tr, feats["test"]["proxy"], y_te)
    out["language_text_sentiment_r2"] = ridge_r2(feats["train"]["language"], y_tr, feats["test"]["language"], y_te)
    out["recoverable_text_sentiment_r2"] = float(truth["test"]["predictability_text"].mean())
    # does the correction bring the incomplete language closer to the complete one? (r = 0.7, all three corrupted)
    plan = missing.protocol_a(test, 0.7, 0, 0, "test")
    (h_l, h_a, h_v), (c_l, _, _) = _lnln_parts(model, test, plan, unk)
    w = model.completeness(h_l)[:, None, None]
    h_d = w * h_l + (1 - w) * model.proxy(h_a, h_v)
    norm = c_l.pow(2).sum((1, 2))
    out["h_l_to_c_l_at_r0.7"] = float(((h_l - c_l).pow(2).sum((1, 2)) / norm).mean())
    out["h_d_to_c_l_at_r0.7"] = float(((h_d - c_l).pow(2).sum((1, 2)) / norm).mean())
    return out


@torch.no_grad()
def lnln_reconstructor(model, ds: MMSADataset, truth: dict) -> dict:
    """The reconstructor's per-sample error on a missing modality against its true predictability."""
    test = ds["test"].data
    out = {}
    for i, m in enumerate(synth.MODALITIES):
        mode = 1 + i  # protocol B: only modality i missing
        inc, com = _lnln_parts(model, test, missing.protocol_b(test, mode=mode), ds.spec.unk_id)
        rec = model.reconstructor[i](inc[i])
        err = (rec - com[i]).pow(2).mean((1, 2)).cpu().numpy()
        as_is = (inc[i] - com[i]).pow(2).mean((1, 2)).cpu().numpy()
        pred = truth["test"][f"predictability_{m}"]
        out[m] = {"error": float(err.mean()), "error_as_is": float(as_is.mean()),
                  "spearman_error_vs_predictability": spearman(err, pred),
                  "error_useful": float(err[pred >= 0.5].mean()) if (pred >= 0.5).any() else float("nan"),
                  "error_not_useful": float(err[pred < 0.5].mean()) if (pred < 0.5).any() else float("nan")}
    return out


# ----------------------------------------------------------------------------------------------- runs

def grid_run(results_dir, model: str, protocol: str, seed: int, variant: str, shape: str = "small"):
    """(model, dataset, run folder) of the reference grid's cell, trained there first if the grid has not finished
    it."""
    from .experiment import load_checkpoint, load_dataset, run
    from .reproduce import Cell, cell_config

    cell = Cell(model, protocol, seed)
    cfg, _ = cell_config(cell, "synth", overrides={"data": {"synth_variant": variant, "synth_shape": shape}},
                         out=results_dir)
    ds = load_dataset(cfg.data)
    folder = Path(cfg.train.out_dir)
    if not (folder / "results.csv").is_file():
        log.info("training %s for the mechanisms (the grid has not run it yet)", cell.name)
        run(cfg, ds)
    m, _ = load_checkpoint(folder / "best.pt", ds.spec)
    return m, ds, folder


def ablation_run(results_dir, row: str, seed: int, variant: str, shape: str = "small", threads: int | None = 1):
    """The results.csv records of one row of :data:`LNLN_ABLATION` (protocol A, the grid's LNLN cell with the row's
    switches off), trained first into ``<results_dir>/runs/lnln-A-<seed>-<row>/`` if no finished run is there (an
    interrupted one resumes). One thread, as the grid's cells and the chapters train."""
    import pandas as pd

    from .experiment import run
    from .reproduce import Cell, cell_config

    cell = Cell("lnln", "A", seed)
    over = {"data": {"synth_variant": variant, "synth_shape": shape}, "model_config": dict(LNLN_ABLATION[row]),
            "train": {"threads": threads}}
    cfg, _ = cell_config(cell, "synth", overrides=over, out=results_dir)
    folder = Path(results_dir) / "runs" / f"{cell.name}-{row.split(' (')[0].replace(' ', '_')}"
    cfg.train.out_dir = str(folder)
    if not (folder / "results.csv").is_file():
        log.info("training %s for the LNLN ablation", folder.name)
        run(cfg)
    return pd.read_csv(folder / "results.csv")


def over_rates(records) -> dict:
    """Each metric of :data:`LNLN_ABLATION_METRICS` averaged over the ten protocol-A test rates."""
    r = records[(records.protocol == "A") & (records.setting == "rate")]
    return {m: float(r[r.metric == m].value.mean()) for m in LNLN_ABLATION_METRICS}


def measure_lnln_ablation(results_dir, variant: str, seeds=(1111, 1112, 1113), shape: str = "small",
                          rows=LNLN_ABLATION_ROWS) -> dict[str, dict]:
    """The ``lnln_ablation`` entry: the grid's LNLN cell and each ablation row, per seed (see the module docstring)."""
    import pandas as pd

    per = {}
    for s in seeds:
        _, _, folder = grid_run(results_dir, "lnln", "A", s, variant, shape)  # trained first if not finished
        full = pd.read_csv(folder / "results.csv")
        per[s] = {"LNLN": over_rates(full), **{r: over_rates(ablation_run(results_dir, r, s, variant, shape))
                                                 for r in rows}}
    return {"lnln_ablation": entry(variant, per)}


def measure_lnln(results_dir, variant: str, seeds=(1111, 1112, 1113), shape: str = "small") -> dict[str, dict]:
    per = {"lnln_dmc": {}, "lnln_reconstructor": {}}
    truth = None
    for s in seeds:
        model, ds, _ = grid_run(results_dir, "lnln", "A", s, variant, shape)
        if truth is None:
            _, truth = synth.truth(synth.ensure(shape, 0, variant))
        per["lnln_dmc"][s] = lnln_dmc(model, ds, truth)
        per["lnln_reconstructor"][s] = lnln_reconstructor(model, ds, truth)
    return {k: entry(variant, v) for k, v in per.items()}


def measure_promma_standins(results_dir, variant: str, seeds=(1111, 1112, 1113), shape: str = "small") -> dict[str, dict]:
    """The ``standins`` entry, on each seed's ProMMA cell of the grid (protocol B)."""
    from .mechanisms_promma import measure_standins

    per, truth = {}, None
    for s in seeds:
        model, ds, _ = grid_run(results_dir, "promma", "B", s, variant, shape)
        if truth is None:
            _, truth = synth.truth(ds.path)
        per[s] = measure_standins(model, ds, truth)
    return {"standins": entry(variant, per)}


def measure(results_dir, variant: str, seeds=(1111, 1112, 1113), shape: str = "small", only=None) -> Path:
    """Measure every mechanism on one variant and write ``<results_dir>/mechanisms.json``. ProMMA's seeds are kept
    one file each under ``<results_dir>/mechanisms/`` (see :func:`mmsa_core.mechanisms_promma.promma_mechanisms`)."""
    entries = {}
    meta = {"dataset": synth.dataset_name(shape, variant), "variant": variant, "generator_version": synth.VERSION}
    if only is None or "lnln" in only:
        entries.update(measure_lnln(results_dir, variant, seeds, shape))
    if only is None or "lnln" in only or "lnln_ablation" in only:
        entries.update(measure_lnln_ablation(results_dir, variant, seeds, shape))
    if only is None or "standins" in only:
        entries.update(measure_promma_standins(results_dir, variant, seeds, shape))
    if only is None or "promma" in only or "dpw_decoders" in only:  # ProMMA's rows: trained here, not in the grid
        from .experiment import load_dataset
        from .mechanisms_promma import dpw_decoder_mechanisms, promma_mechanisms, seed_commits
        from .config import DataConfig

        ds = load_dataset(DataConfig(synth_shape=shape, synth_variant=variant))
        truth = synth.truth(ds.path)
        cache = Path(results_dir) / "mechanisms"  # one file per seed: an interrupted measurement resumes
        if only is None or "promma" in only:
            entries.update(promma_mechanisms(ds, truth, seeds, variant, cache_dir=cache))
            meta["promma_provenance"] = {
                "how": "mmsa_core.mechanisms_promma.promma_mechanisms (measure_seed per seed, then combine); one thread, CPU",
                "measured_at_commit": {str(s): c for s, c in seed_commits(cache, seeds).items()}}
        if only is None or "dpw_decoders" in only:
            entries.update(dpw_decoder_mechanisms(ds, truth, seeds, variant, cache_dir=cache))
            meta["dpw_decoders_provenance"] = {
                "how": "mmsa_core.mechanisms_promma.dpw_decoder_mechanisms (measure_dpw_decoders per seed); one thread, CPU",
                "measured_at_commit": {str(s): c for s, c in seed_commits(cache, seeds, "dpw-decoders").items()}}
    return write(Path(results_dir) / "mechanisms.json", entries, meta)


def add_arguments(p) -> None:
    p.add_argument("--variant", default=synth.DEFAULT_VARIANT, choices=sorted(synth.VARIANTS),
                   help="the testbed's variant (its grid and file: results/synth-small-<variant>/)")
    p.add_argument("--results", help="the grid's folder (default: results/synth-<shape>-<variant>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
    p.add_argument("--shape", default="small", choices=sorted(synth.SHAPES))
    p.add_argument("--only", nargs="+", choices=["lnln", "lnln_ablation", "promma", "dpw_decoders", "standins"],
                   help="measure only these methods' mechanisms (lnln_ablation: LNLN's ablation rows alone; "
                        "dpw_decoders: why ProMMA's DPW weights barely move; standins: what ProMMA's "
                        "stand-ins carry of the true content)")


def cli(a) -> None:
    results = Path(a.results) if a.results else Path("results") / synth.dataset_name(a.shape, a.variant)
    path = measure(results, a.variant, tuple(a.seeds), a.shape, a.only)
    print(f"wrote {path}")
