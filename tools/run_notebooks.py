"""Execute the book's chapters with papermill, in parallel, and report each one's time.

    python tools/run_notebooks.py --inplace            # refresh the committed outputs (what `make book` does)
    python tools/run_notebooks.py --out _build/executed -p epochs 2   # a run that leaves book/ untouched
    python tools/run_notebooks.py --out _build/executed --cwd /tmp/empty  # run each chapter from that folder

Each chapter runs in its own folder (``book/``) unless ``--cwd`` names another one; ``tools/test_wheel.py`` runs
them from an empty folder against the installed wheel, as on Colab.

After an in-place run, volatile metadata (papermill timings, execution timestamps) is removed so that a
clean re-run leaves `git diff book/` empty.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT_S = 900  # a hung kernel fails the run instead of blocking it
# started first: these chapters train the runs that the others reuse from the cache (and would otherwise wait for on
# its lock): LNLN's of chapters 6-7 and ProMMA's of chapters 3-5, the two longest trainings of the book
START_FIRST = ("06_lnln_dmc", "03_promma_evaluator")
VOLATILE_NB_KEYS = ("papermill",)
VOLATILE_CELL_KEYS = ("papermill", "execution")


def strip_volatile(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for k in VOLATILE_NB_KEYS:
        nb.metadata.pop(k, None)
    for cell in nb.cells:
        for k in VOLATILE_CELL_KEYS:
            cell.metadata.pop(k, None)
    nbformat.write(nb, path)


def run_one(nb: Path, out: Path, params: list[tuple[str, str]], cwd: Path | None = None) -> tuple[Path, bool, float, str]:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "-k", "python3", "--no-progress-bar",
           "--cwd", str(cwd or nb.parent), "--execution-timeout", str(CELL_TIMEOUT_S)]
    for k, v in params:
        cmd += ["-p", k, v]
    env = dict(os.environ, PYTHONHASHSEED="0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return nb, proc.returncode == 0, time.perf_counter() - t0, proc.stderr[-3000:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="default: every book/*.ipynb")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--inplace", action="store_true")
    where.add_argument("--out", help="folder for the executed copies")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--cwd", help="folder every chapter runs in (default: the notebook's own folder)")
    a = ap.parse_args()
    cwd = Path(a.cwd).resolve() if a.cwd else None
    nbs = [Path(p).resolve() for p in a.notebooks] or sorted((ROOT / "book").glob("*.ipynb"))
    nbs.sort(key=lambda p: START_FIRST.index(p.stem) if p.stem in START_FIRST else len(START_FIRST))  # stable
    outs = {}
    for nb in nbs:
        if a.inplace:
            outs[nb] = nb
        else:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            outs[nb] = Path(a.out).resolve() / nb.name
    t0 = time.perf_counter()
    failed = 0
    with ThreadPoolExecutor(a.jobs) as pool:
        for nb, ok, secs, err in pool.map(lambda n: run_one(n, outs[n], a.param, cwd), nbs):
            print(f"{'OK  ' if ok else 'FAIL'} {nb.relative_to(ROOT)}  {secs:6.1f} s", flush=True)
            if not ok:
                failed += 1
                print(err, file=sys.stderr)
            elif a.inplace:
                strip_volatile(nb)
    print(f"{len(nbs) - failed} of {len(nbs)} notebooks ran in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
