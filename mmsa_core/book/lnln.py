"""Inside a trained LNLN (chapters 6 and 7; the model is :mod:`mmsa_core.models.lnln`): what its completeness
check, proxy, discriminator, reconstructor and hyper-modality attention do at each missing rate, its parameter
count per part, the discriminator's accuracy during training, and the ablations of chapter 7.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import metrics as M
from .. import missing
from ..metrics import spearman  # noqa: F401 - book.spearman, for chapter 6
from ..data.mmsa import MMSADataset
from ..utils import set_seed
from .runs import TrainedRun, model_device, preserved_rng, run_lock, trained
from .tables import PERCENT_PREFIXES


# ------------------------------------------------------------------------------ the model's parts (chapter 6)
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

    from ..models.lnln import LNLN, PAPER_SPECS, lnln_preset
    from ..models.text import TextEncoderConfig

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


# -------------------------------------------------- DMC: completeness check, proxy, discriminator (chapter 6)
def one_modality_sweep(model, data: MMSADataset, rates=(0.0, 0.3, 0.5, 0.7, 0.9), seed: int = 0, split: str = "test",
                       metrics: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows (corrupted, level, metric, value): the model's test metrics when protocol A at rate r corrupts ONE
    modality and leaves the other two complete. The masks are those of the ordinary test draw at r (seed
    ``seed``), so the three rows of a rate differ only in which modality the draw is applied to. Default metrics:
    binary accuracy (percent) and MAE."""
    import dataclasses

    from ..evaluate import predict

    lang = data.spec.language
    metrics = metrics or ["Acc-2" if lang == "zh" else "Acc-2 non-0", "MAE"]
    cpu = data[split].data
    dev = cpu.to(model_device(model))
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
    from ..evaluate import predict

    cpu = data[split].data
    plan = missing.protocol_a(cpu, rate, seed, 0, split)
    _, ex = predict(model, cpu.to(model_device(model)), plan, data.spec.unk_id, extras=True)
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
    from ..evaluate import autocast

    dev = model_device(model)
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


class DiscriminatorRecorder:
    """A forward hook that reads LNLN's effectiveness discriminator while the trainer runs (pass it as
    ``forward_hook`` to :func:`mmsa_core.book.trained` or :func:`mmsa_core.train.fit`, which hold it only while they
    train): on each training batch its accuracy, from the model's extras; in the validation pass after each epoch,
    one more, introspective forward of the same batch. An epoch begins at the first training batch after an
    evaluation. Reads only: the training it watches is unchanged (tests/test_lnln.py)."""

    def __init__(self):
        self.epoch, self.training, self.busy, self.rows = -1, False, False, {}

    def _add(self, key, values):
        row = self.rows.setdefault(self.epoch, {})
        s, n = row.get(key, (0.0, 0))
        row[key] = (s + float(values.float().sum()), n + values.numel())

    def __call__(self, module, args, output):
        from ..models.lnln import LNLN

        if self.busy or not isinstance(module, LNLN):
            return None
        if module.training:
            if not self.training:
                self.epoch, self.training = self.epoch + 1, True
            if "disc_acc" in output.extras:
                self._add("train", output.extras["disc_acc"])
            return None
        self.training = False
        if self.epoch < 0:  # an evaluation before any training batch is not an epoch's validation
            return None
        self.busy, old = True, module.introspect
        module.introspect = True
        try:
            ex = module(*args).extras
        finally:
            module.introspect, self.busy = old, False
        if "disc_acc" in ex:
            self._add("valid", ex["disc_acc"])
        return None

    def frame(self) -> pd.DataFrame:
        rows = [{"epoch": e, **{f"disc. accuracy ({k})": s / max(n, 1) for k, (s, n) in r.items()}}
                for e, r in sorted(self.rows.items())]
        return pd.DataFrame(rows)


def training_trace(run: TrainedRun, recorder: DiscriminatorRecorder | None = None) -> pd.DataFrame:
    """Per epoch of an LNLN ``run``: the effectiveness discriminator's accuracy on the training batches (mean over
    the epoch, corrupted and complete tokens half each) and on the validation split at the selection rate (after
    the epoch), and the discriminator's training cross-entropy (``train_adversarial`` / beta), kept as
    ``trace.csv`` in the run's folder.

    The trainer does not record the accuracy. ``recorder``: the :class:`DiscriminatorRecorder` that watched this
    run train (``book.trained(..., forward_hook=recorder)``); where it saw every epoch, its rows are the trace.
    Otherwise (the run was reused, or resumed) this retrains the run's exact configuration with a recorder (same
    seed, data and code, hence the same trajectory, which is checked against the run's history), once."""
    import dataclasses
    import tempfile

    from ..experiment import model_config
    from ..models import build_model
    from ..train import fit

    path = run.dir / "trace.csv"
    beta, cfg, t = run.model.cfg.beta, run.config, run.config.train
    run_ce = run.history["train_adversarial"].to_numpy() / beta
    with run_lock(run.dir.parent / f"{run.dir.name}.lock"):
        if not path.is_file():
            tab = recorder.frame() if recorder is not None else pd.DataFrame()
            if len(tab) == len(run_ce) and not t.track_test and not tab.isna().any().any():
                tab["train CE"] = run_ce  # the recorder watched this very run
            else:  # retrain with a recorder
                rec = DiscriminatorRecorder()
                with preserved_rng(), tempfile.TemporaryDirectory() as tmp:
                    set_seed(t.seed, t.deterministic, t.threads)  # as experiment.run does before building the model
                    net = build_model(cfg.model, model_config(cfg), run.data.spec)
                    res = fit(net, run.data, dataclasses.replace(t, out_dir=tmp, progress=False, track_test=False), tmp,
                              "trace", forward_hook=rec)
                tab = rec.frame()
                tab["train CE"] = pd.DataFrame(res.history)["train_adversarial"].to_numpy() / beta
                off = np.abs(tab["train CE"].to_numpy() - run_ce)
                if off.max() > 1e-9:
                    raise RuntimeError(f"{run.dir}: the retrained run left the cached run's trajectory (epoch "
                                       f"{int(off.argmax())}, cross-entropy off by {off.max():.3g}): its trace would "
                                       "not describe the cached run; retrain it (book.trained(..., fresh=True))")
            tab.to_csv(path, index=False)
        return pd.read_csv(path)


# ---------------------------------------------- DMML: reconstruction and hyper-modality attention (chapter 7)
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


def reconstruction_crossover(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per modality, from :func:`lnln_diagnostics`: the lowest rate r > 0 at which the reconstructed tokens are closer
    to the complete input's than the incomplete tokens are ("never" when they are not at any rate of the table)."""
    rows = []
    for m in missing.MODALITIES:
        if f"rec. {m}" in diagnostics:
            wins = [r for r in diagnostics.index if r > 0 and diagnostics.at[r, f"rec. {m}"] < diagnostics.at[r, f"as is {m}"]]
            rows.append({"modality": m, "reconstruction closer from r =": f"{min(wins):.1f}" if wins else "never"})
    return pd.DataFrame(rows).set_index("modality")


def hyper_attention(model, data: MMSADataset, rate: float, seed: int = 0, split: str = "test") -> dict[str, np.ndarray]:
    """The hyper-modality attention weights averaged over the samples of ``split`` (and over heads) at protocol-A
    rate ``rate``: ``{"audio": (layers, T, T), "vision": (layers, T, T)}``, rows = language tokens (queries),
    columns = the modality's summary tokens (keys)."""
    from ..evaluate import predict

    cpu = data[split].data
    plan = missing.protocol_a(cpu, rate, seed, 0, split)
    _, ex = predict(model, cpu.to(model_device(model)), plan, data.spec.unk_id, extras=True)
    return {m: ex[f"hyper_attn_{m}"].double().mean(0).numpy() for m in ("audio", "vision")}


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


# -------------------------------------------------------------------------------------- ablations (chapter 7)
# the ablations of LNLN (chapter 7): name -> the switches it turns off (``"almt"`` is the last one as a model name);
# defined beside their measurement (mmsa_core.mechanisms), which trains the rows chapter 7 shows over three seeds
from ..mechanisms import LNLN_ABLATION as LNLN_ABLATIONS  # noqa: E402 - one ablation list, shared


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


__all__ = ["LNLN_ABLATIONS", "ablation_switches", "attention_summary", "completeness_scores", "hyper_attention",
           "lnln_ablation", "lnln_diagnostics", "lnln_parts", "one_modality_sweep", "reconstruction_crossover",
           "reconstruction_curves", "spearman", "training_trace", "DiscriminatorRecorder"]
