"""How many times a training step makes the host wait for the device: a counting instrument, on any machine.

A GPU step that reads a value back (``.item()``, ``float(t)``, ``if t.any():``), sizes a tensor by its values
(``nonzero()``, boolean-mask indexing) or copies host memory to the device (``torch.tensor(list, device=...)``,
``cpu_tensor.to(device)``) stalls the launch queue. The trainer marks each step with :func:`step`; inside
:func:`count`, every step is counted:

- on every machine (the CPU included), the calls that would synchronise or copy host -> device on a GPU, made
  by this package's own code (``mmsa_core``; torch's optimiser and GradScaler are torch's business), by name and
  by source line: ``c.calls``, ``c.lines``, ``c.per_step()``;
- where CUDA exists, also every synchronising CUDA call of the step (``torch.cuda.set_sync_debug_mode("warn")``,
  torch's own included): ``c.cuda``.

Outside :func:`count`, :func:`step` costs nothing. Usage::

    with syncs.count() as c:
        fit(model, ds, cfg, out, "hash")
    print(c.per_step(), c.lines.most_common(5))
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

PACKAGE = str(Path(__file__).resolve().parent)
# read a value back (a device -> host copy and a wait), or size a result by the data
READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero", "masked_select",
         "unique", "bincount"}
FACTORIES = {"tensor", "as_tensor"}  # from Python data: a host -> device copy when the target is a GPU


class SyncCounter:
    def __init__(self):
        self.steps = 0
        self.calls: Counter = Counter()  # name -> count, over all counted steps
        self.lines: Counter = Counter()  # "file:line name" -> count
        self.cuda = 0  # synchronising CUDA calls reported by torch (GPU only)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def per_step(self) -> float:
        return self.total / max(1, self.steps)


_counter: SyncCounter | None = None


def _is_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


class _Mode(TorchFunctionMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        kind = None
        if name in READS:
            kind = name
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_bool_index(args[1]):
            kind = f"{name}[bool mask]"
        elif name in FACTORIES and args and not isinstance(args[0], torch.Tensor):
            kind = f"torch.{name}(data)"
        elif name in ("to", "cuda") and (name == "cuda" or _has_device(args[1:], kwargs)):
            kind = f".{name}(device)"
        if kind is not None:
            frame = sys._getframe(1)
            path = frame.f_code.co_filename
            if path.startswith(PACKAGE):
                self.counter.calls[kind] += 1
                self.counter.lines[f"{Path(path).relative_to(PACKAGE)}:{frame.f_lineno} {kind}"] += 1
        return func(*args, **kwargs)


def _has_device(args, kwargs) -> bool:
    if "device" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor)) for a in args)


@contextlib.contextmanager
def count():
    """Count the synchronisations of every :func:`step` run inside; yields the :class:`SyncCounter`."""
    global _counter
    prev, _counter = _counter, SyncCounter()
    try:
        yield _counter
    finally:
        _counter = prev


@contextlib.contextmanager
def step():
    """Marks one training step (a no-op unless :func:`count` is active)."""
    c = _counter
    if c is None:
        yield
        return
    c.steps += 1
    cuda = torch.cuda.is_available()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            before = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with _Mode(c):
                yield
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(before)
    for w in caught:
        if "synchroniz" in str(w.message):
            c.cuda += 1
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


__all__ = ["SyncCounter", "count", "step"]
