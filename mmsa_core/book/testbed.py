"""The embedded testbed as chapter 2 shows it (and chapters 3-9 measure against): its knobs, the truth written
beside the data, and the oracle (:mod:`mmsa_core.oracle`) at every missing mode and rate."""

from __future__ import annotations

from dataclasses import asdict, fields

import numpy as np
import pandas as pd

from .. import missing, oracle
from ..data import synth
from ..data.mmsa import MMSADataset

KNOB_MEANINGS = {
    "redundancy_a": "redundancy rho ~ Beta(a, b) per sample: a",
    "redundancy_b": "... and b (mean a / (a + b))",
    "redundancy_jitter": "per-modality spread of rho around the sample's (logit scale)",
    "weights": "how much the text, audio and vision contents move the label (language dominant)",
    "label_std": "standard deviation of the noise-free label",
    "annotator_noise": "standard deviation of the annotators' noise on the label",
    "text_scale": "lexicon score of a sentiment phrase per unit of text content",
    "phrase_noise": "how far a phrase's score strays from text_scale x content",
    "phrase_tolerance": "a phrase is drawn among those this close to the wanted score",
    "phrase_counts": "number K of sentiment phrases in a sentence, drawn from this list",
    "audio_noise": "variance of the audio content recovered from all of a sample's frames",
    "vision_noise": "the same for vision",
    "congruence_cue": "how clearly voice and face show a sample's redundancy (0: not at all)",
}


def knobs() -> pd.DataFrame:
    """Every knob of the generator, its value in each variant, and what it does."""
    rows = {}
    for f in fields(synth.Testbed):
        rows[f.name] = {**{v: str(getattr(tb, f.name)) for v, tb in synth.VARIANTS.items()},
                        "what it does": KNOB_MEANINGS.get(f.name, "")}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "knob"
    return df


def truth_of(data: MMSADataset) -> tuple[dict, dict]:
    """(meta, truth) written beside the embedded dataset ``data`` (:func:`mmsa_core.data.synth.truth`)."""
    return synth.truth(data.path)


def predictability_summary(data: MMSADataset, split: str = "test") -> pd.DataFrame:
    """Per modality, over the samples of ``split``: mean redundancy, mean and spread of the true predictability from
    the other two modalities, and the share of samples whose generated stand-in is useful (predictability >= 0.5)."""
    _, truth = truth_of(data)
    t = truth[split]
    rows = {m: {"redundancy (mean)": t[f"redundancy_{m}"].mean(), "predictability (mean)": t[f"predictability_{m}"].mean(),
                "predictability (std)": t[f"predictability_{m}"].std(), "useful stand-in (share)": t[f"useful_{m}"].mean()}
            for m in synth.MODALITIES}
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def oracle_table(datasets: dict[str, MMSADataset], metric: str = "MAE", seed: int = 0) -> pd.DataFrame:
    """The oracle's test ``metric`` at each protocol-B mode and at protocol-A rates 0, 0.5, 0.9, one row per variant."""
    from ..evaluate import evaluate

    rows = {}
    for name, data in datasets.items():
        meta, truth = truth_of(data)
        test = data["test"].data
        model = oracle.Oracle(truth["test"], meta)
        row = {}
        for m, mode_name in enumerate(missing.MODE_NAMES):
            row[mode_name] = evaluate(model, test, data.spec, "B", None, seed, "test", mode=m, amp=False)[metric]
        for r in (0.5, 0.9):
            row[f"A, r = {r}"] = evaluate(model, test, data.spec, "A", r, seed, "test", amp=False)[metric]
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "variant"
    return df.round(3)


def generated_vs_truth(data: MMSADataset, split: str = "test") -> pd.DataFrame:
    """Per sample of ``split``: each modality's redundancy and true predictability (for the figure of chapter 2)."""
    _, truth = truth_of(data)
    t = truth[split]
    return pd.concat([pd.DataFrame({"modality": m, "redundancy": t[f"redundancy_{m}"],
                                    "predictability": t[f"predictability_{m}"]}) for m in synth.MODALITIES],
                     ignore_index=True)


__all__ = ["KNOB_MEANINGS", "generated_vs_truth", "knobs", "oracle_table", "predictability_summary", "truth_of"]
