"""Worker functions for the 2-process gloo tests (imported by spawned processes, so they live in a module).

Each process plays one torchrun rank: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* are set as torchrun sets them,
then the real entry point (``experiment.run`` -> ``fit``) starts the process group itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import traceback
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def run_configs(rank: int, world: int, port: int, data_path: str, configs: list[dict], err_dir: str) -> None:
    """``experiment.run`` for each config dict (a RunConfig as a dict) in turn, in one process group."""
    _as_rank(rank, world, port)
    from mmsa_core import experiment
    from mmsa_core.config import RunConfig, from_dict
    from mmsa_core.data.mmsa import load_mmsa

    ds = load_mmsa(data_path, name="tiny")
    try:
        for d in configs:
            experiment.run(from_dict(RunConfig, d), dataset=ds)
    except BaseException:
        Path(err_dir, f"rank{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_interrupted(rank: int, world: int, port: int, data_path: str, config: dict, err_dir: str) -> None:
    """``experiment.run`` stopped on every rank right after the first epoch's ``last.pt`` (as a kill would stop
    it), then started again in the same folder: it resumes from that checkpoint."""
    _as_rank(rank, world, port)
    from mmsa_core import distributed, experiment
    from mmsa_core.config import RunConfig, from_dict
    from mmsa_core.data.mmsa import load_mmsa

    class Killed(Exception):
        pass

    ds = load_mmsa(data_path, name="tiny")
    barrier = distributed.barrier

    def barrier_then_stop():  # fit's barrier after the end-of-epoch save
        barrier()
        raise Killed()

    try:
        cfg = from_dict(RunConfig, config)
        distributed.barrier = barrier_then_stop
        try:
            experiment.run(cfg, dataset=ds)
        except Killed:
            pass
        distributed.barrier = barrier
        experiment.run(cfg, dataset=ds)
    except BaseException:
        Path(err_dir, f"rank{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        distributed.barrier = barrier
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def spawn(fn, world: int, *args, err_dir) -> None:
    """Run ``fn(rank, world, port, *args, err_dir)`` in ``world`` fresh processes; raise with every rank's
    traceback if one fails."""
    import torch.multiprocessing as mp

    err = Path(err_dir)
    shutil.rmtree(err, ignore_errors=True)
    err.mkdir(parents=True)
    try:
        mp.start_processes(fn, args=(world, free_port(), *args, str(err)), nprocs=world, start_method="spawn")
    except Exception as e:  # noqa: BLE001 - re-raised with the ranks' own tracebacks
        logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(err.glob("rank*.txt")))
        raise AssertionError(f"a rank failed: {e}\n{logs}") from None
