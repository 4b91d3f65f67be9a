"""Inside a trained ProMMA (chapters 3-5; the model is :mod:`mmsa_core.models.promma`): its two stages, the
Missing Modality Evaluator's decisions (MME, chapter 3), the prompts and their orthogonality (MPD, chapter 4),
the stream weights and gates (DPW and MPDC, chapter 5), and the ablation variants every chapter trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import missing
from ..experiment import load_checkpoint
from ..utils import load_checkpoint_file, set_seed
from .runs import TrainedRun, model_device, preserved_rng, trained
from .tables import PERCENT_PREFIXES, acc2_name


# ------------------------------------------------------------- the variants and the two stages (chapters 3-5)
# The ablation of chapters 3-5: name -> (model, model_config overrides). Every chapter trains a variant through
# :func:`promma_variant`, so identical arguments give identical config hashes and the runs are shared.
from ..mechanisms_promma import ABLATION as PROMMA_VARIANTS  # noqa: E402 - one ablation list, shared
_SHORT = {"text": "l", "audio": "a", "vision": "v"}


def promma_variant(name: str, epochs: int | None = None, seed: int = 1111, dataset: str = "synth", full: bool = False,
                   device: str = "auto", **kw) -> TrainedRun:
    """One row of :data:`PROMMA_VARIANTS`, trained (or reused) by :func:`trained`. ``"ProMMA"`` is the same run as
    ``trained("promma", epochs=epochs, seed=seed, dataset=dataset, full=full, device=device)``."""
    model, over = PROMMA_VARIANTS[name]
    return trained(model, epochs=epochs, seed=seed, dataset=dataset, full=full, device=device,
                   model_config=dict(over) or None, **kw)


def stage_model(run: TrainedRun, stage: str = "pretrain") -> torch.nn.Module:
    """The selected checkpoint of one stage of a two-stage run (ProMMA: ``"pretrain"`` or ``"adapt"``), in eval mode.
    The pretrain checkpoint is the frozen backbone that ProMMA's evaluator asks for its pseudo labels."""
    net, _ = load_checkpoint(run.dir / stage / "best.pt", run.data.spec, model_device(run.model))
    return net.eval()


def stage_history(run: TrainedRun, metric: str = "MAE") -> pd.DataFrame:
    """Per epoch of both stages of a ProMMA run: stage, epoch (counted across the stages, from 1) and the validation
    ``metric`` that selected the stage's checkpoint (stage 1 scores complete data, stage 2 protocol B at its eta).
    ``run.history`` holds the last stage only; the first stage's log is read from its ``last.pt``."""
    parts = []
    for stage in ("pretrain", "adapt"):
        ck = load_checkpoint_file(run.dir / stage / "last.pt")
        h = pd.DataFrame(ck["history"])
        parts.append(pd.DataFrame({"stage": "1: pretrain (complete data)" if stage == "pretrain" else
                                   "2: adapt (protocol B)", f"valid {metric}": h[f"valid_{metric}"].astype(float).round(4)}))
    out = pd.concat(parts, ignore_index=True)
    out.insert(1, "epoch", np.arange(1, len(out) + 1))
    return out


def stages_table(run: TrainedRun, metrics: list[str] | None = None) -> pd.DataFrame:
    """The two stages of a ProMMA run on the test split, per protocol-B missing mode: the pretrained backbone
    (stage 1, trained on complete data only) and the adapted model (stage 2, the run's selected checkpoint)."""
    from ..evaluate import evaluate

    metrics = metrics or ["MAE", acc2_name(run.data.spec.language)]
    net = stage_model(run, "pretrain")
    test = run.data["test"].data.to(model_device(net))
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


def same_pretrained_backbone(a: TrainedRun, b: TrainedRun) -> bool:
    """True when two ProMMA-family runs ended stage 1 with identical backbones (every backbone parameter and buffer
    of the two stage-1 checkpoints): their comparison then differs in stage 2 only. The prompts and modules, which
    stage 1 does not train, are not compared: their initial values depend on which modules a variant builds."""
    from ..models.promma import BACKBONE

    sa = load_checkpoint_file(a.dir / "pretrain" / "best.pt")["model"]
    sb = load_checkpoint_file(b.dir / "pretrain" / "best.pt")["model"]
    shared = [k for k in sa if k.split(".")[0] in BACKBONE] + [k for k in sb if k.split(".")[0] in BACKBONE]
    shared = list(dict.fromkeys(shared))
    if any(k not in sa or k not in sb for k in shared):
        return False
    return bool(shared) and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in shared)


# ------------------------------------------------------------ MME: the missing modality evaluator (chapter 3)
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
    from ..models.layers import masked_mean

    model = run.model
    model.eval()
    dev = model_device(model)
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


# ---------------------------------------------------------------- MPD: shared and private prompts (chapter 4)
def initial_model(run: TrainedRun) -> torch.nn.Module:
    """The run's model as it was before training: the same config, built after the same seeding as
    :func:`mmsa_core.experiment.run` (the global random state of the chapter is left as it was)."""
    from ..experiment import model_config
    from ..models import build_model

    t = run.config.train
    with preserved_rng():
        set_seed(t.seed, t.deterministic, None)
        net = build_model(run.config.model, model_config(run.config), run.data.spec)
    return net.to(model_device(run.model)).eval()


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


# ----------------------------------------------------------------------------------- DPW and MPDC (chapter 5)
@torch.no_grad()
def dpw_weights(run: TrainedRun, split: str = "test") -> pd.DataFrame:
    """Mean DPW weight of each crossmodal stream under each protocol-B missing mode on ``split``, tidy (present,
    target, source, weight): for each target modality, the weights of its two streams sum to 1 per sample."""
    from ..evaluate import predict

    data = run.data[split].data.to(model_device(run.model))
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
    dev = model_device(net)
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


__all__ = ["PAIR_NAMES", "PROMMA_VARIANTS", "dpw_weights", "imputation_compare", "initial_model",
           "loss_history", "mme_decisions", "mpdc_table", "orth_table", "orth_terms", "promma_variant",
           "prompt_cosines", "prompt_norms", "prompt_points", "same_pretrained_backbone", "stage_history",
           "stage_model", "stages_table"]
