"""Read, validate and write datasets in the MMSA feature-pickle format.

One pickle is a dict with splits ``train``, ``valid``, ``test``; each split is a dict of arrays (see
``shared/spec/protocols.md``). :func:`load_mmsa` validates every key, rank, feature size, dtype, length and
label, and returns whole splits as tensors in memory, so that a batch is one indexing operation.

Safety: every pickle (the user's and the cached embedded one) is read by :class:`FeatureUnpickler`, which
rebuilds only what feature pickles hold (dicts, lists, strings, numbers, NumPy arrays, dtypes and scalars) and
refuses every other global with a :class:`DataError`: a pickle cannot run code here.

Dataset family (``mosi``, ``mosei``, ``sims``): it sets the label range and the metrics (SIMS: Chinese, labels in
[-1, 1]; MOSI / MOSEI: English, [-3, 3]). It comes from ``family=`` (``data.family``) if given, else from the
data (:func:`family_from_data`: unimodal label keys, the raw text's script, the label range); a dataset named in
the path (:func:`family_from_path`) is only a guess that is checked against the data, never the decision.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = ("text", "text_bert", "audio", "vision", "regression_labels")


class DataError(ValueError):
    """Bad input data: the message names the file, split, key, what was expected and what was found."""


# --------------------------------------------------------------------------------------- safe unpickling
# The globals an MMSA feature pickle needs (NumPy 1.x writes numpy.core.*, NumPy 2 numpy._core.*): arrays
# (protocols 2-4: _reconstruct; 5: _frombuffer), dtypes, scalars; containers and str/bytes of older protocols.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}


class FeatureUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only the types of MMSA feature pickles (see ``_ALLOWED_GLOBALS``); any other
    global (a class, a function such as ``os.system``) raises ``pickle.UnpicklingError`` before it is looked up."""

    def find_class(self, module: str, name: str):
        mod = "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module
        if (mod, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a feature pickle "
                                         "(only NumPy arrays, dtypes, scalars and plain containers are)")
        if mod.startswith("numpy._core.") and not hasattr(np, "_core"):  # NumPy 1.x without the numpy._core alias
            mod = "numpy.core." + mod[len("numpy._core."):]
        return super().find_class(mod, name)


def read_pickle(path):
    """The object in the pickle at ``path``, read by :class:`FeatureUnpickler`; any failure is one DataError."""
    try:
        with open(path, "rb") as f:
            return FeatureUnpickler(f).load()
    except Exception as e:  # noqa: BLE001 - a cut or corrupted pickle fails in many ways (EOFError, TypeError, ...)
        raise DataError(f"{path}: cannot unpickle ({type(e).__name__}: {str(e)[:300]}); is the file complete and "
                        "an MMSA feature pickle?") from None


# --------------------------------------------------------------------------------------- dataset family
FAMILIES = {  # label range, language (metrics: SIMS's for "zh", MOSI's otherwise)
    "mosi": ((-3.0, 3.0), "en"),
    "mosei": ((-3.0, 3.0), "en"),
    "sims": ((-1.0, 1.0), "zh"),
}
UNIMODAL_LABEL_KEYS = ("regression_labels_T", "regression_labels_A", "regression_labels_V")  # CH-SIMS only


def family_from_path(path) -> str | None:
    """``mosei``, ``mosi`` or ``sims`` when the file's name or its two parent folders name one (``MOSI/Processed/
    unaligned_50.pkl``; mosei first: it contains "mosi"), else None. A guess only: :func:`load_mmsa` checks it
    against the data."""
    s = "/".join(Path(path).parts[-3:]).lower()
    for fam in ("mosei", "mosi", "sims"):
        if fam in s:
            return fam
    return None


def family_from_data(splits: dict[str, dict], texts: list[str], labels: np.ndarray) -> tuple[str | None, list[str], list[str]]:
    """``"sims"``, ``"cmu"`` (MOSI or MOSEI, which share labels and metrics) or None, with the evidence for SIMS
    and for CMU. The content decides: CH-SIMS's unimodal label keys and the script of ``raw_text`` (Han characters
    vs Latin letters); contradicting content, or none, gives None. Only without content evidence do the labels
    decide (one beyond SIMS's [-1, 1]: CMU); with it, a label out of range is a data error found afterwards."""
    sims, cmu = [], []
    keys = sorted({k for d in splits.values() for k in UNIMODAL_LABEL_KEYS if k in d})
    if keys:
        sims.append(f"unimodal label keys {keys}")
    sample = "".join(texts[:5000])
    han = sum("\u4e00" <= c <= "\u9fff" for c in sample)
    latin = sum(c.isascii() and c.isalpha() for c in sample)
    if han > latin:
        sims.append("Chinese raw_text")
    elif latin > han:
        cmu.append("English raw_text")
    top = float(np.abs(labels).max()) if labels.size else 0.0
    if not sims and not cmu and top > 1.0 + 1e-6:
        cmu.append(f"labels up to |{top:.3g}| (beyond SIMS's [-1, 1])")
    kind = None if bool(sims) == bool(cmu) else ("sims" if sims else "cmu")
    return kind, sims, cmu


@dataclass
class DataSpec:
    """What a model must know about the data it will see (sizes, vocabulary ids, label range)."""

    text_len: int
    text_dim: int
    audio_len: int
    audio_dim: int
    vision_len: int
    vision_dim: int
    label_min: float = -3.0
    label_max: float = 3.0
    unk_id: int = 100
    language: str = "en"
    family: str = "mosi"  # "mosi", "mosei" or "sims" (see FAMILIES): how it was decided is MMSADataset.family_source


@dataclass
class Batch:
    """A batch (or a whole split): every field has the sample dimension first.

    After corruption by a missing-data protocol (:mod:`mmsa_core.missing`) the feature fields hold the
    corrupted inputs, ``audio_mask``/``vision_mask`` mark positions that are valid AND kept, ``present``
    says which modalities are available at all, ``rates`` the fraction of droppable positions actually
    dropped, ``mode`` the protocol-B missing mode (0 = complete), and ``complete`` the uncorrupted batch.
    """

    text_ids: torch.Tensor  # (B, Lt) long, BERT token ids
    text_mask: torch.Tensor  # (B, Lt) long, attention mask of the tokenizer
    text_segment: torch.Tensor  # (B, Lt) long
    text_feat: torch.Tensor  # (B, Lt, Dt) float, precomputed text features
    audio: torch.Tensor  # (B, La, Da) float
    audio_mask: torch.Tensor  # (B, La) bool
    vision: torch.Tensor  # (B, Lv, Dv) float
    vision_mask: torch.Tensor  # (B, Lv) bool
    labels: torch.Tensor  # (B,) float
    index: torch.Tensor  # (B,) long, position of each sample in its split
    present: torch.Tensor | None = None  # (B, 3) bool, modality available (text, audio, vision)
    rates: torch.Tensor | None = None  # (B, 3) float, achieved drop rate per modality
    mode: torch.Tensor | None = None  # (B,) long, protocol-B missing mode (0 = complete)
    complete: "Batch | None" = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _map(self, fn) -> "Batch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = fn(v)
            elif isinstance(v, Batch):
                v = v._map(fn)
            out[f.name] = v
        return Batch(**out)

    def take(self, idx: torch.Tensor) -> "Batch":
        """The samples at ``idx`` (a long tensor on the batch's device)."""
        return self._map(lambda t: t[idx])

    def length_key(self) -> torch.Tensor:
        """(B,) long: a sort key of the valid lengths, text tokens first (the text encoder is the largest cost when
        there is one), ties by audio + vision frames. Batches of similar keys need little padding."""
        return self.text_mask.sum(1).long() * (self.audio_mask.shape[1] + self.vision_mask.shape[1] + 1) \
            + self.audio_mask.sum(1) + self.vision_mask.sum(1)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    def with_(self, **changes) -> "Batch":
        return replace(self, **changes)


@dataclass
class Split:
    """One split held in memory: a :class:`Batch` with every sample, plus its text metadata."""

    name: str
    data: Batch
    ids: list[str] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class MMSADataset:
    name: str
    path: str
    spec: DataSpec
    splits: dict[str, Split]
    fingerprint: str
    family_source: str = ""  # why spec.family: "set by data.family" or the evidence found in the data

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise DataError(f"{self.path}: no split {split!r}; the file has {sorted(self.splits)}")
        return self.splits[split]


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _array(path, split, key, value, ndim, dtype_kind="f") -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and other non-arrays
        raise DataError(f"{path}: split {split!r} key {key!r}: expected an array, got {type(value).__name__} ({e})")
    if arr.ndim != ndim:
        raise DataError(f"{path}: split {split!r} key {key!r}: expected rank {ndim}, got shape {arr.shape}")
    if dtype_kind == "f" and arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: split {split!r} key {key!r}: expected numbers, got dtype {arr.dtype}")
    return arr


def _split_from_dict(path, split: str, d, warn_inf: bool = True) -> Split:
    """One validated split (the label range is checked by :func:`load_mmsa` once the family is known)."""
    if not isinstance(d, dict):
        raise DataError(f"{path}: split {split!r}: expected a dict of arrays, got {type(d).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise DataError(f"{path}: split {split!r}: missing key(s) {missing}; expected at least {list(REQUIRED_KEYS)}")
    with np.errstate(over="ignore"):  # float32 before the finite check: a value beyond float32 becomes inf there
        text = _array(path, split, "text", d["text"], 3).astype(np.float32, copy=False)
    text_bert = _array(path, split, "text_bert", d["text_bert"], 3)
    audio = _array(path, split, "audio", d["audio"], 3).astype(np.float32)
    vision = _array(path, split, "vision", d["vision"], 3).astype(np.float32)
    labels = _array(path, split, "regression_labels", d["regression_labels"], 1).astype(np.float32)
    n = labels.shape[0]
    if n == 0:
        raise DataError(f"{path}: split {split!r} is empty (0 samples)")
    for key, arr in (("text", text), ("text_bert", text_bert), ("audio", audio), ("vision", vision)):
        if arr.shape[0] != n:
            raise DataError(f"{path}: split {split!r} key {key!r}: expected {n} samples (as regression_labels), got {arr.shape[0]}")
    if text_bert.shape[1] != 3:
        raise DataError(f"{path}: split {split!r} key 'text_bert': expected shape (N, 3, L_t) [ids, mask, segments], got {text_bert.shape}")
    if text_bert.shape[2] != text.shape[1]:
        raise DataError(f"{path}: split {split!r} key 'text_bert': expected L_t = {text.shape[1]} (as 'text'), got {text_bert.shape[2]}")
    for key, arr in (("text", text), ("text_bert", text_bert), ("vision", vision), ("regression_labels", labels)):
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise DataError(f"{path}: split {split!r} key {key!r}: expected finite values, found {bad} NaN/inf")
    if np.isnan(audio).any():
        raise DataError(f"{path}: split {split!r} key 'audio': expected finite values, found {int(np.isnan(audio).sum())} NaN")
    if np.isinf(audio).any():
        k = int(np.isinf(audio).sum())
        if warn_inf:
            log.warning("%s: split %r key 'audio': replaced %d infinite values by 0 (real MOSEI has -inf)", path, split, k)
        audio = np.where(np.isinf(audio), 0.0, audio).astype(np.float32)
    bad_ids = {"ids": (text_bert[:, 0] < 0) | (text_bert[:, 0] >= 2**31), "attention mask": (text_bert[:, 1] != 0) & (text_bert[:, 1] != 1),
               "segment ids": (text_bert[:, 2] != 0) & (text_bert[:, 2] != 1)}
    for what, bad in bad_ids.items():
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            row = {"ids": 0, "attention mask": 1, "segment ids": 2}[what]
            expected = "token ids in [0, 2**31)" if what == "ids" else "0 or 1"
            raise DataError(f"{path}: split {split!r} key 'text_bert': row {row} ({what}) expects {expected}, got "
                            f"{text_bert[i, row, j]:g} at sample {i}, position {j}")
    lengths = {}
    for m, arr in (("audio", audio), ("vision", vision)):
        key = f"{m}_lengths"
        if key in d:
            ln = _array(path, split, key, d[key], 1)
            if not np.isfinite(ln).all():
                raise DataError(f"{path}: split {split!r} key {key!r}: expected finite lengths, found "
                                f"{int((~np.isfinite(ln)).sum())} NaN/inf")
            if ln.shape[0] != n or ln.min(initial=0) < 0 or ln.max(initial=0) > arr.shape[1]:
                got = f"in [{ln.min()}, {ln.max()}]" if ln.size else "(none)"  # min() of nothing would raise
                raise DataError(
                    f"{path}: split {split!r} key {key!r}: expected {n} lengths in [0, {arr.shape[1]}], "
                    f"got {ln.shape[0]} values {got}"
                )
            ln = ln.astype(np.int64)
        else:  # aligned pickles carry no lengths: every frame is valid
            ln = np.full(n, arr.shape[1], dtype=np.int64)
        lengths[m] = torch.from_numpy(ln)
    ids_bert = torch.from_numpy(np.rint(text_bert).astype(np.int64))
    pos = lambda L: torch.arange(L)[None, :]  # noqa: E731
    data = Batch(
        text_ids=ids_bert[:, 0].contiguous(),
        text_mask=ids_bert[:, 1].contiguous(),
        text_segment=ids_bert[:, 2].contiguous(),
        text_feat=torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)),
        audio=torch.from_numpy(np.ascontiguousarray(audio)),
        audio_mask=pos(audio.shape[1]) < lengths["audio"][:, None],
        vision=torch.from_numpy(np.ascontiguousarray(vision)),
        vision_mask=pos(vision.shape[1]) < lengths["vision"][:, None],
        labels=torch.from_numpy(labels),
        index=torch.arange(n),
    )
    ids = _strings(path, split, "id", d.get("id", range(n)), n)
    raw = _strings(path, split, "raw_text", d.get("raw_text", [""] * n), n)
    return Split(split, data, ids, raw)


def _strings(path, split: str, key: str, value, n: int) -> list[str]:
    """``n`` entries of ``value`` as strings (sample ids, raw text)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size \
            and (np.ascontiguousarray(value).view(np.uint32) > 0x10FFFF).any():  # a corrupted NumPy string array
        raise DataError(f"{path}: split {split!r} key {key!r}: expected text, found code points beyond Unicode")
    try:
        vals = [str(x) for x in (value.tolist() if isinstance(value, np.ndarray) else value)]
    except TypeError:  # a scalar, or another non-sequence
        raise DataError(f"{path}: split {split!r} key {key!r}: expected {n} entries, got {type(value).__name__}") from None
    if len(vals) != n:
        raise DataError(f"{path}: split {split!r} key {key!r}: expected {n} entries (as regression_labels), got {len(vals)}")
    return vals


def _decide_family(path, raw: dict, splits: dict[str, Split], family: str | None, audio_dim: int) -> tuple[str, str]:
    """The family to use and why (see the module docstring); a DataError when the data cannot tell."""
    texts = [t for s in splits.values() for t in s.raw_text]
    labels = np.concatenate([s.data.labels.numpy() for s in splits.values()])
    kind, sims, cmu = family_from_data(raw, texts, labels)
    guess = family_from_path(path)
    if family is not None:
        if family not in FAMILIES:
            raise DataError(f"{path}: unknown dataset family {family!r}; expected one of {sorted(FAMILIES)}")
        if kind is not None and (kind == "sims") != (family == "sims"):
            log.warning("%s: data.family=%s, but the data look like %s (%s)", path, family,
                        "CH-SIMS" if kind == "sims" else "CMU-MOSI/MOSEI", "; ".join(sims or cmu))
        return family, "set by data.family"
    if kind is None:
        found = f"evidence for SIMS: {sims}, for MOSI/MOSEI: {cmu}" if sims else "no evidence either way"
        raise DataError(f"{path}: cannot tell from the data whether this is CH-SIMS or CMU-MOSI/MOSEI ({found}); "
                        f"set data.family to one of {sorted(FAMILIES)} (e.g. --set data.family=mosi)")
    if kind == "sims":
        fam = "sims"
    else:  # MOSI and MOSEI share labels and metrics: the path's name, else MOSEI's 74 COVAREP features
        fam = guess if guess in ("mosi", "mosei") else ("mosei" if audio_dim == 74 else "mosi")
    why = "from the data: " + ", ".join(sims or cmu)
    if guess is not None and (guess == "sims") != (fam == "sims"):
        log.warning("%s: the path names %s, but the data are %s (%s); using %s (set data.family to choose)",
                    path, guess, "CH-SIMS" if fam == "sims" else "CMU-MOSI/MOSEI", why[len("from the data: "):], fam)
        why += f"; the path's {guess!r} disagrees"
    return fam, why


def load_mmsa(path, name: str | None = None, label_range: tuple[float, float] | None = None,
              family: str | None = None) -> MMSADataset:
    """Load and validate an MMSA-format pickle: read by :class:`FeatureUnpickler` (no code runs), every key
    checked, the dataset family decided (``family``, else from the data) and the labels checked against its
    range (or ``label_range`` if given)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (MMSA pickles are downloaded by the user; see the README)")
    name = name or path.stem
    raw = read_pickle(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict with splits {list(SPLITS)}, got {type(raw).__name__}")
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{path}: missing split(s) {missing}; expected {list(SPLITS)}, found {sorted(map(str, raw))}")
    splits = {s: _split_from_dict(path, s, raw[s]) for s in SPLITS}
    ref = splits["train"].data
    for s in SPLITS[1:]:
        b = splits[s].data
        for field_, key in (("text_feat", "text"), ("audio", "audio"), ("vision", "vision")):  # the pickle's keys
            exp, got = tuple(getattr(ref, field_).shape[1:]), tuple(getattr(b, field_).shape[1:])
            if exp != got:
                raise DataError(f"{path}: split {s!r} key {key!r}: expected per-sample shape {exp} (as train), got {got}")
    fam, why = _decide_family(path, {s: raw[s] for s in SPLITS}, splits, family, ref.audio.shape[2])
    lo, hi = label_range if label_range is not None else FAMILIES[fam][0]
    for s, sp in splits.items():
        y = sp.data.labels
        if y.min() < lo or y.max() > hi:
            raise DataError(f"{path}: split {s!r} key 'regression_labels': expected values in [{lo}, {hi}] "
                            f"(family {fam}, {why}), got min {float(y.min()):.3f}, max {float(y.max()):.3f}")
    spec = DataSpec(
        text_len=ref.text_feat.shape[1], text_dim=ref.text_feat.shape[2],
        audio_len=ref.audio.shape[1], audio_dim=ref.audio.shape[2],
        vision_len=ref.vision.shape[1], vision_dim=ref.vision.shape[2],
        label_min=float(lo), label_max=float(hi), language=FAMILIES[fam][1], family=fam,
    )
    log.debug("%s: dataset family %s (%s)", path, fam, why)
    return MMSADataset(name, str(path), spec, splits, _fingerprint(path), why)


def write_mmsa(path, splits: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write a dict of splits as an MMSA pickle (atomically: a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(splits, f, protocol=4)
    os.replace(tmp, path)
    return path
