"""The GPU and mixed-precision paths, exercised on the CPU (issue 14): precision choice, resume across precisions,
GradScaler and bf16 autocast through training and evaluation for every model, torch.compile's fallback, the
checkpoint's RNG and device handling, the sweep's deduplication, fields kept off the device, and the
host-device synchronisations per training step (:mod:`mmsa_core.syncs`). The 2-process DDP runs are in
``test_distributed.py``."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import make_mmsa_splits
from mmsa_core import distributed, evaluate as E, experiment, missing, syncs
from mmsa_core import train as trainer
from mmsa_core.config import DataConfig, RunConfig, TrainConfig, from_dict
from mmsa_core.data.mmsa import load_mmsa, write_mmsa
from mmsa_core.models import build_model, get_model_class
from mmsa_core.models.text import TextEncoder, load_pretrained
from mmsa_core.utils import set_seed

TINY = dict(n=(9, 6, 6), Lt=6, Dt=8, La=6, Da=3, Lv=5, Dv=2, seed=3)
MODELS = ("baseline", "lnln", "almt", "promma", "mplmm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = write_mmsa(tmp_path_factory.mktemp("tiny") / "tiny.pkl", make_mmsa_splits(**TINY))
    return load_mmsa(p, name="tiny")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A small BERT saved WITH its pooling layer, as hub checkpoints are."""
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=2048, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0), add_pooling_layer=True).save_pretrained(d)
    return d


def _model(name, spec, **mcfg):
    cfg_cls, _ = get_model_class(name)
    return build_model(name, from_dict(cfg_cls, mcfg), spec)


def _fit(ds, out, name="baseline", seed=1111, mcfg=None, **train):
    set_seed(seed, True, 1)
    model = _model(name, ds.spec, **(mcfg or {}))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 4, "eval_batch_size": 4, "progress": False, "threads": 1,
                         "out_dir": str(out), "seed": seed, **train})
    return model, trainer.fit(model, ds, cfg, out, "hash", {"model_name": name})


class Killed(Exception):
    pass


def _kill_after_first_epoch(monkeypatch):
    save = trainer.atomic_save

    def save_then_stop(obj, path):
        save(obj, path)
        if path.name == "last.pt":
            monkeypatch.setattr(trainer, "atomic_save", save)
            raise Killed()

    monkeypatch.setattr(trainer, "atomic_save", save_then_stop)


# ---------------------------------------------------------------- precision


def test_emulated_bf16_takes_fp16_with_a_scaler(monkeypatch):
    """A T4 reports bf16 as supported when emulation counts: it must get fp16 (tensor cores, GradScaler)."""
    def t4(including_emulation=True):
        return including_emulation  # emulated only

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    assert E.amp_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert E.amp_dtype(torch.device("cuda")) == torch.bfloat16
    assert E.amp_dtype(torch.device("cpu")) is None and E.amp_dtype(torch.device("cuda"), amp=False) is None
    assert E.amp_dtype(torch.device("cpu"), dtype="bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype"):
        E.amp_dtype(torch.device("cpu"), dtype="half")


def test_gradscaler_on_the_cpu_through_training(tiny, tmp_path, restore_torch_globals):
    """fp16 autocast + an enabled GradScaler("cpu") through training steps: finite losses, a loss scale saved."""
    model, res = _fit(tiny, tmp_path, amp_dtype="fp16")
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert ck["scaler"] and ck["scaler"]["scale"] > 0
    assert all(np.isfinite(v) for row in res.history for k, v in row.items() if k.startswith("train_"))


@pytest.mark.parametrize("written, resumed", [("fp32", "fp16"), ("fp16", "fp32"), ("bf16", "fp16")])
def test_resume_across_precisions(tiny, tmp_path, monkeypatch, restore_torch_globals, written, resumed):
    """A last.pt written without a loss scale (CPU, bf16 GPU) resumes in fp16 (a T4), and the reverse."""
    _kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        _fit(tiny, tmp_path, amp_dtype=written)
    _, res = _fit(tiny, tmp_path, amp_dtype=resumed)
    assert res.resumed_from == 1 and len(res.history) == 2
    scaler = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)["scaler"]
    assert bool(scaler) == (resumed == "fp16")


def test_amp_dtype_is_not_part_of_the_config_hash():
    from mmsa_core.config import config_hash

    a, b = RunConfig(), RunConfig(train=TrainConfig(amp_dtype="fp16"))
    assert config_hash(a) == config_hash(b) and config_hash(a) != config_hash(RunConfig(train=TrainConfig(amp=False)))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_cpu_bf16_trains_and_evaluates_every_model(tiny, tmp_path, name, restore_torch_globals):
    """bf16 autocast on the CPU through both ProMMA stages, LNLN's losses and the sweep: finite metrics."""
    cfg = from_dict(RunConfig, {"model": name, "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 4,
                                                         "threads": 1, "progress": False, "amp_dtype": "bf16",
                                                         "out_dir": str(tmp_path)}})
    df = experiment.run(cfg, dataset=tiny)
    assert len(df) > 0 and np.isfinite(df.value.to_numpy(float)).all()


@pytest.mark.parametrize("name", MODELS)
def test_predictions_leave_the_head_in_fp32(tiny, name):
    """Under bf16 autocast the head runs in fp32: predictions are not rounded to bf16 (steps of 0.0156 at |y| >= 2)."""
    torch.manual_seed(0)
    model = _model(name, tiny.spec).eval()
    data = tiny["test"].data
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(data).pred
    assert pred.dtype == torch.float32
    assert not torch.equal(pred, pred.bfloat16().float())


# ---------------------------------------------------------------- checkpoints, RNG, processes


def test_last_pt_is_loaded_on_the_cpu(tiny, tmp_path, monkeypatch, restore_torch_globals):
    """map_location="cpu": on CUDA, AdamW's step counters would otherwise move to the GPU (.item() per tensor)."""
    _kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        _fit(tiny, tmp_path)
    seen, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: seen.append((str(f), kw.get("map_location"))) or load(f, *a, **kw))
    _fit(tiny, tmp_path)
    assert [m for f, m in seen if f.endswith("last.pt")] == ["cpu"]


def test_cuda_rng_of_this_gpu_only(monkeypatch):
    """A last.pt with 2 GPUs' states (an older version) resumes with 1 visible GPU; a new one holds its own GPU's."""
    set_calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((4,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": set_calls.append((s.tolist(), device)))

    def set_all(states):  # as torch's: one set_rng_state per state; a missing GPU raises
        for i, s in enumerate(states):
            if i >= 1:
                raise IndexError("list index out of range")
            torch.cuda.set_rng_state(s, i)

    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    st = trainer._rng_state(torch.device("cuda", 0))
    assert st["cuda"].tolist() == [7] * 4
    old = {**st, "cuda": [torch.full((4,), 1, dtype=torch.uint8), torch.full((4,), 2, dtype=torch.uint8)]}
    trainer._set_rng_state(old, torch.device("cuda", 0))
    trainer._set_rng_state(st, torch.device("cuda", 0))
    assert set_calls == [([1] * 4, 0), ([7] * 4, 0)]


def test_is_main_before_the_process_group(monkeypatch):
    """torchrun sets RANK before the process group starts: only rank 0 may write config.yaml then."""
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_main()


def test_an_empty_shard_gets_a_stand_in_of_weight_zero(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    batch = torch.tensor([5])  # the last global batch, smaller than the world size
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(batch)[0].tolist() == [5] and distributed.shard(batch)[1] == 2.0
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    idx, share = distributed.shard(batch)  # nothing left for rank 0: the batch's sample, weight 0
    assert idx.tolist() == [5] and share == 0.0
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    idx, share = distributed.shard(torch.arange(5))
    assert idx.tolist() == [2, 3, 4] and share == pytest.approx(1.2)


def test_bert_is_loaded_without_its_pooler(bert_dir):
    """The pooler never reaches a loss: under DDP it stopped training at step 2."""
    bert = load_pretrained(str(bert_dir))
    assert bert.pooler is None and not any(n.startswith("pooler") for n, _ in bert.named_parameters())


# ---------------------------------------------------------------- torch.compile


class _LazyCompiled(torch.nn.Module):
    """What torch.compile returns: compiles at the first call. ``fail``: that compilation fails (after the
    forward drew from the RNG, as dropout would)."""

    def __init__(self, module, fail):
        super().__init__()
        self.inner, self.fail, self.calls = module, fail, 0

    def forward(self, *a, **kw):
        self.calls += 1
        out = self.inner(*a, **kw)
        if self.calls == 1:  # compiling
            torch.rand(5)  # RNG drawn by the compilation
            if self.fail:
                raise RuntimeError("inductor: backend compiler failed")
        return out


@pytest.mark.parametrize("fail", [True, False])
def test_compile_is_warmed_up_inside_the_fallback(tiny, tmp_path, monkeypatch, restore_torch_globals, fail):
    """A compiler failure at the first call falls back to eager; a working compiler's warm-up leaves the RNG and
    the gradients as they were: both runs equal the eager one, bit for bit. Evaluation is compiled too."""
    made = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: made.append(_LazyCompiled(m, fail)) or made[-1])
    _, res = _fit(tiny, tmp_path / "compiled", compile=True)
    monkeypatch.undo()
    _, eager = _fit(tiny, tmp_path / "eager", compile=False)
    assert len(made) == 2 and all(m.calls >= 1 for m in made)  # evaluation and training, each warmed up
    assert [r["train_sentiment"] for r in res.history] == [r["train_sentiment"] for r in eager.history]
    assert [r["valid_MAE"] for r in res.history] == [r["valid_MAE"] for r in eager.history]
    assert (res.eval_model is None) == fail


# ---------------------------------------------------------------- evaluation sweep, device data


class _CountCalls:
    def __init__(self, module):
        self.n = 0
        module.register_forward_pre_hook(self)

    def __call__(self, *_):
        self.n += 1


def test_sweep_runs_each_distinct_pass_once(tiny):
    """Rate 0 of A, eta 0 of B and B's complete mode are one input: 25 passes for A + B, not 27; the records are
    exactly those of one evaluate() per setting."""
    torch.manual_seed(0)
    model = _model("baseline", tiny.spec).eval()
    data = tiny["test"].data
    calls = _CountCalls(model)
    recs = E.sweep(model, data, tiny.spec, ("A", "B"), 0, batch_size=4)
    n_batches = 2  # 6 samples in batches of 4
    assert calls.n == 25 * n_batches
    got = {(r["protocol"], r["setting"], r["level"] if r["setting"] == "rate" else r["mode"], r["metric"]): r["value"]
           for r in recs}
    for proto in "AB":
        for lv in missing.RATES:
            m = E.evaluate(model, data, tiny.spec, proto, lv, 0, "test", batch_size=4)
            assert all(got[(proto, "rate", float(lv), k)] == v or (np.isnan(v) and np.isnan(got[(proto, "rate", float(lv), k)]))
                       for k, v in m.items())
    for mode in range(7):
        m = E.evaluate(model, data, tiny.spec, "B", None, 0, "test", mode=mode, batch_size=4)
        assert all(got[("B", "mode", missing.MODE_NAMES[mode], k)] == v or np.isnan(v) for k, v in m.items())


@pytest.mark.parametrize("name", ["baseline", "lnln", "promma"])
def test_protocol_b_runs_the_text_encoder_once_per_distinct_text(tiny, bert_dir, name):
    """Under B a sample's text is complete or wholly missing: the BERT runs twice per batch for all 16 distinct
    B passes (not 16 times), and the predictions are those of the encoder run on every pass."""
    torch.manual_seed(0)
    model = _model(name, tiny.spec, text={"kind": "pretrained", "name_or_path": str(bert_dir)}).eval()
    data = E.model_inputs(tiny["test"].data, model, "cpu")
    enc = next(m for m in model.modules() if isinstance(m, TextEncoder))
    calls = _CountCalls(enc.bert)
    recs = E.sweep(model, data, tiny.spec, "B", 0, batch_size=4)
    assert calls.n == 2 * 2  # 2 batches x (complete, missing)
    for r in recs:
        if r["metric"] == "MAE":
            mode = None if r["setting"] == "rate" else missing.MODE_NAMES.index(r["mode"])
            ref = E.evaluate(model, data, tiny.spec, "B", None if mode is not None else r["level"], 0, "test",
                             mode=mode, batch_size=4)["MAE"]
            assert r["value"] == pytest.approx(ref, abs=1e-6)


def test_unused_text_features_stay_off_the_device(tiny, bert_dir):
    """A BERT never reads the precomputed text features (3.5 GB of MOSEI's 8.5 GB): they are not moved."""
    bert_model = _model("lnln", tiny.spec, text={"kind": "pretrained", "name_or_path": str(bert_dir)})
    feat_model = _model("lnln", tiny.spec)
    data = tiny["train"].data
    assert E.model_inputs(data, bert_model, "cpu").text_feat.shape == (*data.text_feat.shape[:2], 0)
    assert E.model_inputs(data, feat_model, "cpu").text_feat.shape == data.text_feat.shape
    # and the model trains and is corrupted on such data (indexing, protocols, LNLN's batched pass)
    b = E.model_inputs(data, bert_model, "cpu")
    batch = missing.apply(b, missing.draw("A", b, None, 0, 0, "train"), tiny.spec.unk_id)
    sum(bert_model.train()(batch).losses.values()).backward()


# ---------------------------------------------------------------- host-device synchronisations per step


def _syncs_per_step(ds, tmp_path, name, **mcfg):
    with syncs.count() as c:
        _fit(ds, tmp_path, name, mcfg=mcfg, epochs=1, protocol="B" if name in ("promma", "mplmm") else "A")
    return c


@pytest.mark.parametrize("name, bound", [("baseline", 0), ("lnln", 0)])
def test_syncs_per_training_step(tiny, tmp_path, restore_torch_globals, name, bound):
    """Counted by mmsa_core.syncs: no .item()/.cpu()/float()/mask indexing or host->device copy in mmsa_core's
    code of a baseline or LNLN step (the plan is on the device, losses are summed there). Before: 9 and 13."""
    c = _syncs_per_step(tiny, tmp_path, name)
    assert c.steps == 3  # 9 samples in batches of 4
    assert c.per_step() <= bound, c.lines.most_common()


def test_sync_counter_sees_what_it_counts():
    """The instrument counts reads, mask indexing and host->device copies made by mmsa_core inside a step."""
    from mmsa_core.models.layers import masked_mean  # mmsa_core code that must not sync: counted as 0

    x, m = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    with syncs.count() as c:
        with syncs.step():
            masked_mean(x, m)
        with syncs.step():
            distributed.all_sum({"a": torch.tensor(1.0)})  # one .cpu().tolist() for all the keys
            x[m]  # test code, not mmsa_core's: not counted
    assert c.steps == 2 and dict(c.calls) == {"cpu": 1, "tolist": 1} and c.total == 2
    assert all(line.startswith("distributed.py:") for line in c.lines)
    with syncs.step():  # outside count(): nothing recorded
        distributed.all_sum({"a": torch.tensor(1.0)})
    assert c.total == 2
