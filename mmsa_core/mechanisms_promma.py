"""What ProMMA's four modules do, measured on trained models against the testbed's ground truth (chapters 3-5).

Each ``measure_*`` function takes a trained ProMMA model, the dataset and (where it scores against it) the truth
of :func:`mmsa_core.data.synth.truth` (``{split: {key: (N,) array}}``, aligned with the split's samples), and
returns a plain dict of numbers. :func:`train_variants` trains the ablation rows (and the fast-decoder ProMMA) of
one seed with a shared first stage; :func:`promma_mechanisms` runs both over seeds and returns the ``mme``, ``mpd``, ``dpw``, ``mpdc`` and
``ablation`` entries of ``results/<set>/mechanisms.json`` (the file's writer is not here).

What is measured (all on the test split, protocol B with every sample in one fixed missing mode; **ours**):

- ``dpw``: ``weight_drop_missing_source`` = the mean over samples and over the (mode, target) cells in which
  exactly one of the target's two sources is missing, of w(complete) - w(mode) for the stream of the missing source.
  (When both sources are missing the two weights still sum to 1, so those cells carry no information.) The same
  with the weights that the MI scores alone would give (softmax of the critic scores, without the task gate), and
  with truth, the Spearman correlation between a stream's weight on complete data and |content| of its source.
- ``mpdc``: the number of levels (memory-encoder layers), every gate, max |gate|, and how much the predictions move
  when the gates are set to 0 in the trained model.
- ``mme``: per sample, the evaluator's score s_m against the truth's ``useful_m`` (AUC), on the modes in which only
  m is missing (the truth's predictability is "from the other two complete modalities"), and pooled over every
  incomplete mode; the teacher's pseudo labels against the same truth; how often the decision differs within one
  (mode, modality) cell; and test metrics with the evaluator's gate vs always generating vs never generating.
- ``standins`` (:func:`measure_standins`, on the grid's ProMMA cells, written by :mod:`mmsa_core.mechanisms`): how
  much of a missing modality's true content its generated stand-in carries, against what a linear regressor
  recovers from the present modalities and what the truth says is predictable.
- ``mpd``: the mean |change of prediction| when one private part D_m is removed (P_m = P_s), on the modes where m is
  missing vs the modes where it is present.
- ``dpw_decoders`` (:func:`dpw_decoder_mechanisms`): why the DPW weights barely move. Each trained decoder against
  a copy fitted further to convergence on the same trained model's inputs (the score gap between a present and a
  missing source, and the weight drop that the fitted copies would give), and ProMMA trained with decoders that
  learn 10x faster (:data:`FAST_DECODERS`): its DPW numbers and its test metrics beside ProMMA's.
- ``ablation``: one row per module switched off, one for the generation loss alone (lambda_gen = 0), the
  MPLMM-style baseline, and ProMMA; test MAE and binary accuracy averaged over the ten eta and over the six
  incomplete modes, per seed, mean and std.
"""

from __future__ import annotations

import copy
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import metrics, missing
from .metrics import spearman
from .config import from_dict, load_config
from .data.mmsa import MMSADataset
from .evaluate import predict
from .models import build_model, get_model_class
from .models.promma import BACKBONE, PAIRS, ProMMA
from .train import _rng_state, _set_rng_state, fit
from .utils import set_seed

SEEDS = (1111, 1112, 1113)
# the ablation rows: name -> (model, model_config overrides of the preset)
ABLATION = {
    "ProMMA": ("promma", {}),
    "without MME": ("promma", {"use_mme": False}),
    "without MPD": ("promma", {"use_mpd": False}),
    "without DPW": ("promma", {"use_dpw": False}),
    "without MPDC": ("promma", {"use_mpdc": False}),
    "without generation loss": ("promma", {"lambda_gen": 0.0}),
    "MPLMM-style": ("mplmm", {}),
}
# not an ablation row: ProMMA with DPW's decoders learning 10x faster (their fixed output scale 100 instead of the
# preset's 10, which under Adam moves their output 10x faster per step), to test why the weights barely move
FAST_DECODERS = "fast DPW decoders"
FAST_DECODER_SCALE = 100.0
VARIANTS = {**ABLATION, FAST_DECODERS: ("promma", {"dpw_decoder_scale": FAST_DECODER_SCALE})}
INCOMPLETE = range(1, len(missing.MODES))  # the six incomplete protocol-B modes
SINGLE_MISSING = {0: 1, 1: 2, 2: 3}  # modality -> the mode in which it alone is missing ({a,v}, {l,v}, {l,a})


# ------------------------------------------------------------------------------------------------ training
def train_variants(ds: MMSADataset, seed: int, names=tuple(ABLATION), preset: str = "promma_default",
                   out_dir=None, threads: int | None = 1, model_config: dict | None = None) -> dict[str, ProMMA]:
    """The rows ``names`` of :data:`VARIANTS` (the ablation rows and the fast-decoder ProMMA) of one seed, trained
    as :func:`mmsa_core.experiment.run` trains each of them, but with stage 1 trained once: every variant builds the same backbone from the seed and trains it identically
    in stage 1 (prompts and modules come from a forked RNG), so each variant starts stage 2 from that checkpoint
    and from the random state stage 1 left. ``model_config`` overrides the preset's for every variant (tests use
    shorter stages). Returns name -> trained model (eval mode, MME teacher attached)."""
    rc = load_config(preset)
    t = replace(rc.train, seed=seed, progress=False)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    out = Path(out_dir)
    try:
        set_seed(seed, t.deterministic, threads)
        built = {}
        rng0 = _rng_state()
        for name in names:  # every variant is built from the same global state; building leaves the backbone's state
            _set_rng_state(rng0)
            model_name, over = VARIANTS[name]
            cfg_cls, _ = get_model_class(model_name)
            mcfg = from_dict(cfg_cls, {**rc.model_config, **(model_config or {}), **over}, f"{preset} ({name})")
            built[name] = build_model(model_name, mcfg, ds.spec)  # from_dict: nested sections (text) become dataclasses
        first = built[names[0]]
        pre, adapt = first.stages(t)
        pre.prepare(first)
        fit(first, ds, replace(t, **pre.train_overrides), out / "pretrain", f"{seed}-pretrain")
        # a copy: state_dict() shares the parameters' storage, which the first variant's stage 2 then trains in
        # place (every later variant would start from ITS adapted projections and head, not from stage 1's)
        state, rng1 = {k: v.clone() for k, v in first.state_dict().items()}, _rng_state()
        models = {}
        for name in names:
            m = built[name]
            own = m.state_dict()
            m.load_state_dict({k: v for k, v in state.items() if k in own and k.split(".")[0] in BACKBONE}, strict=False)
            _set_rng_state(rng1)
            st = m.stages(t)[1]
            st.prepare(m)
            fit(m, ds, replace(t, **st.train_overrides), out / name.replace(" ", "_"), f"{seed}-{name}")
            models[name] = m.eval()
        return models
    finally:
        if tmp is not None:
            tmp.cleanup()


# ------------------------------------------------------------------------------------------------ helpers
def _test(ds: MMSADataset, model, split: str = "test"):
    return ds[split].data.to(next(model.parameters()).device)


def _per_mode(model, ds: MMSADataset, split: str = "test", modes=range(len(missing.MODES))) -> dict:
    """mode -> (predictions (N,), extras dict) on ``split`` with every sample in that protocol-B mode."""
    data = _test(ds, model, split)
    out = {}
    for k in modes:
        plan = missing.draw("B", data, None, 0, 0, split, mode=k)
        out[k] = predict(model, data, plan, ds.spec.unk_id, extras=True)
    return out


@contextmanager
def _cfg(model, **over):
    """The model with config fields changed for the duration (e.g. the MME gate policy)."""
    old = model.cfg
    model.cfg = replace(old, **over)
    try:
        yield model
    finally:
        model.cfg = old


def auc(score, label) -> float:
    """Area under the ROC curve of ``score`` for the binary ``label`` (Mann-Whitney, ties counted half); NaN
    when one class is empty."""
    score, label = np.asarray(score, float), np.asarray(label).astype(bool)
    n1, n0 = label.sum(), (~label).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _scores(pred, data, language) -> dict:
    return metrics.compute(pred.numpy(), data.labels.cpu().numpy(), language)


def ablation_row(model, ds: MMSADataset, split: str = "test", per: dict | None = None) -> dict:
    """Test MAE and binary accuracy averaged over the ten eta of protocol B and over the six incomplete modes.
    Under protocol B a prediction depends on the sample's mode alone, so the seven per-mode passes (``per``, from
    :func:`_per_mode`) give every eta exactly: the same numbers as :func:`mmsa_core.evaluate.sweep`, in 7 passes."""
    acc = "Acc-2" if ds.spec.language == "zh" else "Acc-2 non-0"
    per = per or _per_mode(model, ds, split)
    data = ds[split].data
    preds = torch.stack([per[k][0] for k in range(len(missing.MODES))], 1)  # (N, 7)
    score = lambda p: metrics.compute(p.numpy(), data.labels.numpy(), ds.spec.language)  # noqa: E731
    at_eta = [score(preds.gather(1, missing.draw("B", data, r, 0, 0, split).mode[:, None])[:, 0]) for r in missing.RATES]
    at_mode = [score(preds[:, k]) for k in INCOMPLETE]
    return {"MAE over eta": float(np.mean([m["MAE"] for m in at_eta])), f"{acc} over eta": float(np.mean([m[acc] for m in at_eta])),
            "MAE incomplete modes": float(np.mean([m["MAE"] for m in at_mode])),
            f"{acc} incomplete modes": float(np.mean([m[acc] for m in at_mode]))}


# ------------------------------------------------------------------------------------------------ DPW
def _sources(t: int) -> tuple[int, int]:
    return tuple(s for s in range(3) if s != t)


@torch.no_grad()
def measure_dpw(model: ProMMA, ds: MMSADataset, truth: dict | None = None, split: str = "test", per=None) -> dict:
    per = per or _per_mode(model, ds, split)
    truth = _truth(truth)
    w_full = per[0][1]["dpw_weights"]  # (N, 3, 2)
    mi_full = torch.softmax(per[0][1]["dpw_mi"] / model.cfg.dpw_temperature, -1)
    cells, drops, drops_mi = [], [], []
    for k in INCOMPLETE:
        present = missing.MODES[k]
        w, mi = per[k][1]["dpw_weights"], torch.softmax(per[k][1]["dpw_mi"] / model.cfg.dpw_temperature, -1)
        for t in range(3):
            src = _sources(t)
            gone = [j for j, s in enumerate(src) if not present[s]]
            if len(gone) != 1:
                continue
            j = gone[0]
            d = float((w_full[:, t, j] - w[:, t, j]).mean())
            d_mi = float((mi_full[:, t, j] - mi[:, t, j]).mean())
            drops.append(d)
            drops_mi.append(d_mi)
            cells.append({"present": missing.MODE_NAMES[k], "target": missing.MODALITIES[t],
                          "missing source": missing.MODALITIES[src[j]], "weight complete": float(w_full[:, t, j].mean()),
                          "weight missing": float(w[:, t, j].mean()), "drop": d, "drop (MI scores alone)": d_mi,
                          "weight std across samples": float(w[:, t, j].std())})
    out = {"weight_drop_missing_source": float(np.mean(drops)), "weight_drop_missing_source_mi_only": float(np.mean(drops_mi)),
           "task_gate": bool(model.cfg.dpw_task_gate), "cells": cells,
           "weight_std_across_samples_complete": float(w_full.std(0).mean())}
    if truth is not None:
        tr = truth[split]
        rho = {}
        for t in range(3):
            for j, s in enumerate(_sources(t)):
                name = f"{missing.MODALITIES[t]}<-{missing.MODALITIES[s]}"
                rho[name] = spearman(w_full[:, t, j].numpy(), np.abs(tr[f"content_{missing.MODALITIES[s]}"]))
        out["spearman_weight_vs_source_content"] = rho
        out["spearman_weight_vs_source_content_mean"] = float(np.mean(list(rho.values())))
    return out


def _decoder_inputs(model: ProMMA, ds: MMSADataset, split: str) -> dict[int, tuple]:
    """Stream i of ``PAIRS`` -> (c (n, d), real source z (n, d), source present (n,) bool): what DPW's decoder i reads
    on ``split`` in each of the 7 protocol-B modes, over the samples whose target modality is present."""
    data = _test(ds, model, split)
    z = model._real_pooled(data)  # 3 x (N, d)
    seen: dict[int, list] = {}
    hooks = [model.critic[i].register_forward_hook(lambda m, a, o, i=i: seen.setdefault(i, []).append(a[0].detach()))
             for i in range(len(PAIRS))]
    try:
        per = {}
        for k, present in enumerate(missing.MODES):
            seen.clear()
            _per_mode(model, ds, split, modes=[k])
            for i, (t, s) in enumerate(PAIRS):
                if present[t]:
                    c = torch.cat(seen[i])
                    per.setdefault(i, []).append((c, z[s], torch.full((len(c),), bool(present[s]))))
    finally:
        for h in hooks:
            h.remove()
    return {i: tuple(torch.cat(x) for x in zip(*v)) for i, v in per.items()}


def refit_decoders(model: ProMMA, ds: MMSADataset, steps: int = 2000, lr: float = 1e-3, split: str = "test") -> dict:
    """Why DPW's weights barely move: a copy of each trained decoder, fitted further to convergence (``steps``
    full-batch Adam steps on the training split's inputs of the trained, fixed model, every mode), against the decoder
    as the run left it. Per stream, on ``split``: the score gap present - missing source (nats per dimension:
    how much more information the decoder claims when the source is there) and the Gaussian NLL of the real source,
    both decoders; and the weight drop of :func:`measure_dpw` with the fitted decoders in the trained model."""
    train, test = _decoder_inputs(model, ds, "train"), _decoder_inputs(model, ds, split)
    fitted = copy.deepcopy(model.critic).requires_grad_(True)
    streams = {}
    for i, (t, s) in enumerate(PAIRS):
        c, z, _ = train[i]
        opt = torch.optim.Adam(fitted[i].parameters(), lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                fitted[i].nll(c, z).backward()
                opt.step()
        c, z, present = test[i]
        row = {}
        with torch.no_grad():
            for name, dec in (("in-run", model.critic[i]), ("refit", fitted[i])):
                score = dec.score(c)
                row[f"{name} gap"] = float(score[present].mean() - score[~present].mean())
                row[f"{name} NLL present"] = float(dec.nll(c[present], z[present]))
                row[f"{name} NLL missing"] = float(dec.nll(c[~present], z[~present]))
        streams[f"{missing.MODALITIES[t]}<-{missing.MODALITIES[s]}"] = row
    trained = model.critic
    model.critic = fitted.requires_grad_(False)
    try:
        drop = measure_dpw(model, ds, split=split)["weight_drop_missing_source"]
    finally:
        model.critic = trained
    return {"streams": streams, "in_run_gap": float(np.mean([r["in-run gap"] for r in streams.values()])),
            "refit_gap": float(np.mean([r["refit gap"] for r in streams.values()])),
            "weight_drop_refit_decoders": drop, "steps": steps, "lr": lr}


DPW_FAST_FIELDS = ("weight_drop_missing_source", "weight_std_across_samples_complete",
                   "spearman_weight_vs_source_content_mean")


def measure_dpw_decoders(ds: MMSADataset, truth, seed: int, preset: str = "promma_default", threads: int | None = 1,
                         model_config: dict | None = None) -> dict:
    """One seed of the ``dpw_decoders`` entry: ProMMA and the fast-decoder ProMMA (:data:`FAST_DECODERS`) trained
    from one shared first stage (:func:`train_variants`; ProMMA is the ablation table's own row), the in-run decoders
    of ProMMA against refitted ones (:func:`refit_decoders`), and what the fast decoders' weights do (the DPW
    numbers of :func:`measure_dpw`) and cost (:func:`ablation_row`)."""
    truth = _truth(truth)
    models = train_variants(ds, seed, ("ProMMA", FAST_DECODERS), preset, threads=threads, model_config=model_config)
    full, fast = models["ProMMA"], models[FAST_DECODERS]
    per = _per_mode(fast, ds)
    dpw = measure_dpw(fast, ds, truth, per=per)
    return {"seed": seed, "refit": refit_decoders(full, ds), "ProMMA": ablation_row(full, ds),
            FAST_DECODERS: {**ablation_row(fast, ds, per=per), **{k: dpw[k] for k in DPW_FAST_FIELDS if k in dpw}}}


def dpw_decoder_mechanisms(ds: MMSADataset, truth, seeds=SEEDS, variant: str | None = None,
                           preset: str = "promma_default", threads: int | None = 1, cache_dir=None) -> dict:
    """The ``dpw_decoders`` entry of mechanisms.json: :func:`measure_dpw_decoders` over ``seeds`` (each kept in
    ``cache_dir`` as ``dpw-decoders-<seed>.json``, as :func:`promma_mechanisms` keeps its seeds), as mean, std and
    per-seed values, with every seed's full measurement under ``per_seed``."""
    results = [_cached(cache_dir, f"dpw-decoders-{s}.json",
                       {"dataset": ds.name, "fingerprint": ds.fingerprint, "preset": preset, "seed": s,
                        "fast_decoder_scale": FAST_DECODER_SCALE},
                       lambda s=s: measure_dpw_decoders(ds, truth, s, preset, threads)) for s in seeds]
    rows = ("ProMMA", FAST_DECODERS)
    return {"dpw_decoders": {
        "seeds": list(seeds), "variant": variant, "preset": preset, "fast_decoder_scale": FAST_DECODER_SCALE,
        **{f: _mean_std([r["refit"][f] for r in results]) for f in ("in_run_gap", "refit_gap", "weight_drop_refit_decoders")},
        "rows": {n: {f: _mean_std([r[n][f] for r in results]) for f in results[0][n]} for n in rows},
        "per_seed": results}}


# ------------------------------------------------------------------------------------------------ MPDC
@torch.no_grad()
def measure_mpdc(model: ProMMA, ds: MMSADataset, split: str = "test", per=None) -> dict:
    g = model.mpdc_gates().detach().cpu()
    data = _test(ds, model, split)
    base = per or _per_mode(model, ds, split)
    off = copy.deepcopy(model)
    off.mpdc_gate.zero_()
    zero = _per_mode(off, ds, split)
    change = [float((base[k][0] - zero[k][0]).abs().mean()) for k in base]
    mae = lambda p: float((p - data.labels.cpu()).abs().mean())  # noqa: E731
    return {"levels": int(g.shape[1]),
            "gates": {missing.MODALITIES[m]: [round(float(v), 6) for v in g[m]] for m in range(3)},
            "gate_abs_max": float(g.abs().max()), "gate_abs_mean": float(g.abs().mean()),
            "pred_change_gates_zeroed": float(np.mean(change)),
            "MAE modes trained gates": float(np.mean([mae(base[k][0]) for k in base])),
            "MAE modes gates zeroed": float(np.mean([mae(zero[k][0]) for k in base]))}


# ------------------------------------------------------------------------------------------------ MME
@torch.no_grad()
def measure_mme(model: ProMMA, ds: MMSADataset, truth: dict | None = None, split: str = "test", per=None,
                teacher=None) -> dict:
    """The evaluator's decisions on ``split``, per (incomplete mode, missing modality) and per sample, against the
    truth's ``useful_*`` and the teacher's pseudo labels (``teacher``: the frozen stage-1 model; default the one
    the run attached, e.g. ``book.stage_model(run)`` for a run loaded from disk), and the metrics under the three
    stand-in policies (evaluator, always, never)."""
    if teacher is not None:
        old = model._teacher
        object.__setattr__(model, "_teacher", teacher)
        try:
            return measure_mme(model, ds, truth, split, per)
        finally:
            object.__setattr__(model, "_teacher", old)
    data = _test(ds, model, split)
    per = per or _per_mode(model, ds, split)
    truth = _truth(truth)
    lang = ds.spec.language
    acc = "Acc-2" if lang == "zh" else "Acc-2 non-0"
    out = {"gate": model.cfg.mme_gate, "cells": []}
    vary, pooled_s, pooled_u, pl_gain, pl_u = [], [], [], [], []
    teacher = model._teacher
    for k in INCOMPLETE:
        ex = per[k][1]
        present = missing.MODES[k]
        plan = missing.draw("B", data, None, 0, 0, split, mode=k)
        label = None
        if teacher is not None:  # the pseudo labels on the test split (whose complete data we have)
            b = missing.apply(data, plan, ds.spec.unk_id)
            raw, masks, pres = model._inputs(b)
            gen = model.generator(raw, masks, pres)
            with _cfg(model, mme_soft_labels=True, mme_temperature=1.0):
                label = model.pseudo_labels(b, raw, masks, pres, gen).cpu()  # sigmoid(gain): monotone in the gain
        for m in range(3):
            if present[m]:
                continue
            s, open_ = ex["mme_score"][:, m], ex["mme_gate"][:, m]
            share = float(open_.mean())
            vary.append(min(share, 1 - share))
            cell = {"present": missing.MODE_NAMES[k], "missing": missing.MODALITIES[m], "score mean": float(s.mean()),
                    "score std": float(s.std()), "stand-in used": share}
            if truth is not None:
                u = truth[split][f"useful_{missing.MODALITIES[m]}"].astype(bool)
                cell["auc vs truth"] = auc(s.numpy(), u)
                cell["truly useful"] = float(u.mean())
                pooled_s.append(s.numpy())
                pooled_u.append(u)
                if label is not None:
                    cell["pseudo label auc vs truth"] = auc(label[:, m].numpy(), u)
                    if k == SINGLE_MISSING[m]:
                        pl_gain.append(label[:, m].numpy())
                        pl_u.append(u)
            if label is not None:
                cell["agreement with pseudo label"] = float(((s >= model.cfg.mme_threshold) == (label[:, m] > 0.5)).float().mean())
            out["cells"].append(cell)
    out["decision_minority_share_mean"] = float(np.mean(vary))  # 0: one decision per cell; 0.5: half and half
    out["cells_with_both_decisions"] = float(np.mean([v >= 0.05 for v in vary]))
    if truth is not None:
        single = [c for c in out["cells"] if (c["present"], c["missing"]) in
                  {(missing.MODE_NAMES[SINGLE_MISSING[m]], missing.MODALITIES[m]) for m in range(3)}]
        # AUC over the samples of the three single-missing cells together, and each one
        s1 = np.concatenate([per[SINGLE_MISSING[m]][1]["mme_score"][:, m].numpy() for m in range(3)])
        u1 = np.concatenate([truth[split][f"useful_{missing.MODALITIES[m]}"].astype(bool) for m in range(3)])
        out["auc_vs_truth"] = auc(s1, u1)
        out["auc_vs_truth_per_modality"] = {c["missing"]: c["auc vs truth"] for c in single}
        out["auc_vs_truth_all_incomplete_modes"] = auc(np.concatenate(pooled_s), np.concatenate(pooled_u))
        if pl_gain:
            out["pseudo_label_auc_vs_truth"] = auc(np.concatenate(pl_gain), np.concatenate(pl_u))
        out["truly_useful_share"] = float(u1.mean())
    # one trained model, three policies for its stand-ins
    for policy in ("evaluator", "always", "never"):
        with _cfg(model, mme_gate=model.cfg.mme_gate if policy == "evaluator" else policy):
            out[f"metrics {policy}"] = ablation_row(model, ds, split, per if policy == "evaluator" else None)
    out["metric_names"] = ["MAE", acc]
    return out


@torch.no_grad()
def measure_standins(model: ProMMA, ds: MMSADataset, truth: dict, batch_size: int = 256) -> dict:
    """Do the generated stand-ins carry the content that the present modalities make predictable? Per modality m,
    with m alone missing (protocol B), the test R^2 of m's TRUE content (the truth's ``content_m``) read from pooled
    features (mean over m's valid positions, in the model's projected space) by a ridge probe fitted on train:

    - ``real``: the probe on the real projected features of m (how much content those features carry at all);
    - ``stand-in``: the same probe on the generated stand-ins (what the stand-ins carry, read as the real features);
    - ``stand-in own probe``: a probe fitted on the training split's stand-ins themselves;
    - ``linear from present``: a ridge from the pooled real features of the two present modalities (what a linear
      generator could recover of the content, through these projected features);
    - ``truth predictability``: the truth's mean R^2 of the content given the other two complete observations.

    ``content R2 gap``: ``linear from present`` - ``stand-in own probe``, averaged over the modalities."""
    from .models.layers import masked_mean

    truth = _truth(truth)
    dev = next(model.parameters()).device
    model.eval()

    def batches(split):
        data = ds[split].data
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)))
            yield idx, data.take(idx).to(dev)

    def real(split):  # 3 x (N, d): each modality's real projected features, pooled
        parts = [[], [], []]
        for _, part in batches(split):
            raw, masks, _ = model._inputs(part)
            for m in range(3):
                parts[m].append(masked_mean(model.proj[m](raw[m]), masks[m]).float().cpu())
        return [torch.cat(x).numpy() for x in parts]

    def stand_in(split, m):  # (N, d): m's stand-in with m alone missing, pooled over m's valid positions
        plan, parts = missing.draw("B", ds[split].data, None, 0, 0, split, mode=SINGLE_MISSING[m]), []
        for idx, part in batches(split):
            raw, masks, present = model._inputs(missing.apply(part, plan.take(idx), ds.spec.unk_id))
            mask_c = model._inputs(part)[1][m]
            parts.append(masked_mean(model.generator(raw, masks, present)[m], mask_c).float().cpu())
        return torch.cat(parts).numpy()

    r_tr, r_te = real("train"), real("test")
    out = {}
    for m, name in enumerate(missing.MODALITIES):
        g_tr, g_te = stand_in("train", m), stand_in("test", m)
        y_tr, y_te = truth["train"][f"content_{name}"], truth["test"][f"content_{name}"]
        probe = metrics.ridge(r_tr[m], y_tr)
        others = [j for j in range(3) if j != m]
        out[name] = {"real": metrics.r2(probe(r_te[m]), y_te), "stand-in": metrics.r2(probe(g_te), y_te),
                     "stand-in own probe": metrics.ridge_r2(g_tr, y_tr, g_te, y_te),
                     "linear from present": metrics.ridge_r2(np.concatenate([r_tr[j] for j in others], 1), y_tr,
                                                             np.concatenate([r_te[j] for j in others], 1), y_te),
                     "truth predictability": float(np.mean(truth["test"][f"predictability_{name}"]))}
    out["content R2 gap"] = float(np.mean([out[n]["linear from present"] - out[n]["stand-in own probe"]
                                           for n in missing.MODALITIES]))
    return out


# ------------------------------------------------------------------------------------------------ MPD
@torch.no_grad()
def measure_mpd(model: ProMMA, ds: MMSADataset, split: str = "test", per=None) -> dict:
    """Per private part D_m: mean |change of prediction| when it is removed, per mode; own (m missing) vs others."""
    base = per or _per_mode(model, ds, split)
    out = {"per_mode": {}, "own_missing": {}, "present": {}, "ratio_own_to_present": {}}
    for m in range(3):
        off = copy.deepcopy(model)
        off.private_u[m].zero_()  # D_m = U_m V_mᵀ = 0: P_m = P_s
        red = _per_mode(off, ds, split)
        ch = {k: float((base[k][0] - red[k][0]).abs().mean()) for k in base}
        name = missing.MODALITIES[m]
        out["per_mode"][name] = {missing.MODE_NAMES[k]: v for k, v in ch.items()}
        own = float(np.mean([v for k, v in ch.items() if not missing.MODES[k][m]]))
        pres = float(np.mean([v for k, v in ch.items() if missing.MODES[k][m]]))
        out["own_missing"][name], out["present"][name] = own, pres
        out["ratio_own_to_present"][name] = own / pres if pres > 0 else float("nan")
    norms = model.private_delta().detach().norm(dim=-1).mean(-1) / model.shared_prompt.detach().norm(dim=-1).mean()
    out["private_to_shared_norm"] = {missing.MODALITIES[m]: float(norms[m]) for m in range(3)}
    return out


# ------------------------------------------------------------------------------------------------ all of it
def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
            "values": [float(x) for x in v]}


def measure_seed(ds: MMSADataset, truth, seed: int, names=tuple(ABLATION), preset: str = "promma_default",
                 threads: int | None = 1, model_config: dict | None = None) -> dict:
    """One seed: train the ablation rows ``names`` (:func:`train_variants`), measure the full ProMMA model, and
    summarise every row. ``truth``: the ``{split: {key: array}}`` of :func:`mmsa_core.data.synth.truth` (or its
    (meta, truth) pair), or None where the data have none. Plain, JSON-ready dicts."""
    truth = _truth(truth)
    models = train_variants(ds, seed, names, preset, threads=threads, model_config=model_config)
    full = models["ProMMA"]
    per = _per_mode(full, ds)
    return {"seed": seed, "dpw": measure_dpw(full, ds, truth, per=per), "mpdc": measure_mpdc(full, ds, per=per),
            "mme": measure_mme(full, ds, truth, per=per), "mpd": measure_mpd(full, ds, per=per),
            "ablation": {n: ablation_row(m, ds, per=per if n == "ProMMA" else None) for n, m in models.items()}}


def combine(results: list[dict], variant: str | None = None, preset: str = "promma_default") -> dict:
    """The ``mme``, ``mpd``, ``dpw``, ``mpdc`` and ``ablation`` entries of mechanisms.json from the per-seed results
    of :func:`measure_seed`: the headline numbers as mean, std (over seeds, ddof 1) and per-seed values, and every
    seed's full measurement under ``per_seed``."""
    seeds = [r["seed"] for r in results]
    common = {"seeds": seeds, "variant": variant, "preset": preset}

    def summ(key, fields):
        return {f: _mean_std([r[key].get(f, float("nan")) for r in results]) for f in fields
                if any(f in r[key] for r in results)}

    names = list(results[0]["ablation"])
    out = {
        "dpw": {**common, **summ("dpw", ["weight_drop_missing_source", "weight_drop_missing_source_mi_only",
                                         "weight_std_across_samples_complete", "spearman_weight_vs_source_content_mean"]),
                "per_seed": [r["dpw"] for r in results]},
        "mpdc": {**common, "levels": results[0]["mpdc"]["levels"],
                 **summ("mpdc", ["gate_abs_max", "gate_abs_mean", "pred_change_gates_zeroed"]),
                 "per_seed": [r["mpdc"] for r in results]},
        "mme": {**common, **summ("mme", ["auc_vs_truth", "auc_vs_truth_all_incomplete_modes", "pseudo_label_auc_vs_truth",
                                         "decision_minority_share_mean", "cells_with_both_decisions", "truly_useful_share"]),
                "metrics": {p: {f: _mean_std([r["mme"][f"metrics {p}"][f] for r in results])
                                for f in results[0]["mme"][f"metrics {p}"]} for p in ("evaluator", "always", "never")},
                "per_seed": [r["mme"] for r in results]},
        "mpd": {**common, "ratio_own_to_present": {m: _mean_std([r["mpd"]["ratio_own_to_present"][m] for r in results])
                                                   for m in missing.MODALITIES},
                "per_seed": [r["mpd"] for r in results]},
        "ablation": {**common, "rows": {n: {f: _mean_std([r["ablation"][n][f] for r in results])
                                            for f in results[0]["ablation"][n]} for n in names}},
    }
    if "without generation loss" in names:
        out["ablation"]["generation_loss"] = {**out["ablation"]["rows"]["without generation loss"],
                                              "compared_with": "ProMMA", "seeds": seeds}
    return out


def promma_mechanisms(ds: MMSADataset, truth, seeds=SEEDS, variant: str | None = None, names=tuple(ABLATION),
                      preset: str = "promma_default", threads: int | None = 1, cache_dir=None) -> dict:
    """:func:`combine` of :func:`measure_seed` over ``seeds``: the ProMMA entries of mechanisms.json.

    ``cache_dir``: each seed's measurement is kept there as ``promma-<seed>.json`` (with the dataset fingerprint,
    preset, rows and commit it was measured with) as soon as it is done, and a later call with the same dataset,
    preset and rows reads it instead of training again: an interrupted measurement resumes at the seed it was on.
    Delete the file to measure that seed again."""
    return combine([_cached_seed(ds, truth, s, names, preset, threads, cache_dir) for s in seeds], variant, preset)


def _cached_seed(ds: MMSADataset, truth, seed: int, names, preset: str, threads, cache_dir) -> dict:
    key = {"dataset": ds.name, "fingerprint": ds.fingerprint, "preset": preset, "rows": list(names), "seed": seed}
    return _cached(cache_dir, f"promma-{seed}.json", key, lambda: measure_seed(ds, truth, seed, names, preset, threads))


def _cached(cache_dir, name: str, key: dict, compute) -> dict:
    """``compute()``, kept as ``cache_dir/name`` with ``key`` and the commit as soon as it is done, and read back by a
    later call with the same ``key`` (one that differs is refused by name); no cache when ``cache_dir`` is None."""
    if cache_dir is None:
        return compute()
    import json

    from .utils import git_commit

    path = Path(cache_dir) / name
    if path.is_file():
        doc = json.loads(path.read_text())
        if {k: doc.get(k) for k in key} == key:
            return doc["result"]
        raise ValueError(f"{path}: measured with {({k: doc.get(k) for k in key if doc.get(k) != key[k]})}, this "
                         f"measurement needs {({k: key[k] for k in key if doc.get(k) != key[k]})}; delete the file "
                         "to measure this seed again")
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**key, "commit": git_commit(), "result": result}, default=float) + "\n")
    tmp.replace(path)
    return result


def seed_commits(cache_dir, seeds=SEEDS, prefix: str = "promma") -> dict[int, str]:
    """The commit each cached seed was measured at: ``prefix`` "promma" for :func:`promma_mechanisms`,
    "dpw-decoders" for :func:`dpw_decoder_mechanisms` (``cache_dir`` as there)."""
    import json

    files = {s: Path(cache_dir) / f"{prefix}-{s}.json" for s in seeds}
    return {s: json.loads(f.read_text()).get("commit") for s, f in files.items() if f.is_file()}


def _truth(truth):
    """Accept synth.truth's (meta, {split: ...}) pair or the dict alone."""
    return truth[1] if isinstance(truth, tuple) else truth


__all__ = ["ABLATION", "FAST_DECODERS", "FAST_DECODER_SCALE", "SEEDS", "VARIANTS", "ablation_row", "auc", "combine",
           "dpw_decoder_mechanisms", "measure_dpw", "measure_dpw_decoders", "measure_mme", "measure_mpd", "measure_mpdc",
           "measure_seed", "measure_standins", "promma_mechanisms", "refit_decoders", "seed_commits", "train_variants"]
