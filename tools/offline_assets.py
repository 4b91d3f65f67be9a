"""Sphinx extension: the built book loads every script it needs from its own ``_static`` folder.

Readers with a downloaded copy of the site, and CI (no network), see figures and equations only when nothing
comes from a CDN. At build time this extension copies, into ``_static``:

- ``plotly/plotly.min.js`` from the installed ``plotly`` package;
- ``mathjax/`` (MathJax 3, the npm package ``mathjax``) and ``html-manager/embed.js`` (the npm package
  ``@jupyter-widgets/html-manager``, the stand-alone widget manager that needs no require.js), both unpacked
  by ``make env`` into ``<venv>/share/mmsa-book-js`` (or the folder named by ``MMSA_BOOK_JS``).

``_config.yml`` points ``mathjax_path`` and ``nb_ipywidgets_js`` at those copies. Figures are committed as
``viz.show_fig`` wrote them, with a ``<script src=".../plotly-X.min.js">`` tag from plotly's CDN: a notebook
in Jupyter or Colab needs that tag (Colab draws each output in a frame of its own). On each page this
extension removes those tags and loads the local plotly.js once, in the page head. A page whose figures were
made with another plotly.js than the installed one, or that would still load a script from elsewhere, is a
build warning (an error under ``-W``). Nothing is fetched at build time.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

log = logging.getLogger(__name__)

PLOTLY_CDN_TAG = re.compile(r'<script\b[^>]*\bsrc="https://cdn\.plot\.ly/plotly-(?P<v>[0-9][^"]*?)\.min\.js"[^>]*>\s*</script>')
REMOTE_SCRIPT = re.compile(r'<script\b[^>]*\bsrc="((?:https?:)?//[^"]+)"')
PLOTLY_JS = "plotly/plotly.min.js"
# what is copied from each npm package (paths inside the package) into _static/<folder>
NPM_FILES = {
    "mathjax": ("mathjax", ["es5/tex-mml-chtml.js", "es5/input", "es5/output/chtml", "es5/a11y", "es5/ui", "es5/sre",
                            "es5/adaptors", "LICENSE", "package.json"]),
    "html-manager": ("html-manager", ["dist/embed.js", "dist/embed.js.LICENSE.txt", "dist/*.woff2", "dist/*.woff",
                                      "dist/*.ttf", "dist/*.eot", "dist/*.svg", "package.json"]),
}


# ipywidgets' html-manager 1.x typesets widget labels with MathJax 2's call MathJax.Hub.Queue, which MathJax 3 (the
# one Sphinx loads) lacks: without this, rendering a widget throws. Runs after Sphinx's MathJax config, before MathJax.
WIDGET_MATHJAX_SHIM = """(() => {
  const mj = window.MathJax = window.MathJax || {}, pending = [];
  mj.Hub = {Queue: (cmd) => { pending.push(cmd[2]); }};  // until MathJax 3 has started
  mj.startup = mj.startup || {};
  const ready = mj.startup.ready;
  mj.startup.ready = () => {
    ready ? ready() : MathJax.startup.defaultReady();
    MathJax.Hub = {Queue: (cmd) => MathJax.startup.promise.then(() => MathJax.typesetPromise([cmd[2]]))};
    pending.forEach((el) => MathJax.Hub.Queue(["Typeset", null, el]));
  };
})();"""


def js_dir() -> Path:
    """Where ``make env`` unpacked the npm packages."""
    return Path(os.environ.get("MMSA_BOOK_JS") or Path(sys.prefix) / "share" / "mmsa-book-js")


@functools.cache
def plotly_js() -> tuple[Path, str]:
    """The installed plotly.min.js and the plotly.js version it holds."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ExtensionError(f"{path} not found: the installed plotly package ships no plotly.min.js")
    head = path.read_bytes()[:400].decode("utf-8", "replace")
    m = re.search(r"plotly\.js v(\S+)", head)
    return path, m.group(1) if m else "?"


def _check_sources(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    root = js_dir()
    for name, (folder, _) in NPM_FILES.items():
        if not (root / folder / "package.json").is_file():
            raise ExtensionError(f"{root / folder} is missing: the npm package {name!r} was not unpacked there. "
                                 "Run `make env` (or set MMSA_BOOK_JS to the folder that holds mathjax/ and html-manager/)")
    plotly_js()


def _page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop the per-figure CDN tags of plotly.js, load the local copy once, and warn about remote scripts."""
    _dedupe_scripts(context.get("script_files"))
    body = context.get("body")
    if not isinstance(body, str):
        return
    if "application/vnd.jupyter.widget-view+json" in body:
        app.add_js_file(None, body=WIDGET_MATHJAX_SHIM, priority=501)
    _, have = plotly_js()
    versions = set(m.group("v") for m in PLOTLY_CDN_TAG.finditer(body))
    if versions or 'class="plotly-graph-div"' in body:
        for v in sorted(versions - {have}):
            log.warning(f"{pagename}: figures were made for plotly.js {v}, the installed plotly ships {have}: "
                        "re-execute the chapter with the installed plotly", location=pagename)
        context["body"] = body = PLOTLY_CDN_TAG.sub("", body)
        app.add_js_file(PLOTLY_JS, priority=400)  # before MathJax (500): plotly reads window.MathJax when it exists
    for url in REMOTE_SCRIPT.findall(body):
        log.warning(f"{pagename}: the page loads the script {url} from the network", location=pagename)


def _dedupe_scripts(scripts) -> None:
    """Sphinx 7.4 puts an inline script that an extension adds after the builder started (sphinx-thebe's
    ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) twice in every page: the second ``const``
    is a SyntaxError in the console. Keep the first of each."""
    if not isinstance(scripts, list):
        return
    seen, keep = set(), []
    for js in scripts:
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", None),
               tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    scripts[:] = keep


def _copy(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.builder.outdir) / "_static"
    src, _ = plotly_js()
    (static / "plotly").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, static / PLOTLY_JS)
    root = js_dir()
    for folder, patterns in NPM_FILES.values():
        dest = static / folder
        shutil.rmtree(dest, ignore_errors=True)
        for pattern in patterns:
            matches = sorted((root / folder).glob(pattern))
            if not matches:
                raise ExtensionError(f"{root / folder / pattern}: not found in the unpacked npm package")
            for p in matches:
                # es5/tex-mml-chtml.js -> _static/mathjax/tex-mml-chtml.js; MathJax finds its parts beside itself
                rel = p.relative_to(root / folder)
                rel = Path(*rel.parts[1:]) if rel.parts[0] in ("es5", "dist") else rel
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if p.is_dir():
                    shutil.copytree(p, target, dirs_exist_ok=True)
                else:
                    shutil.copyfile(p, target)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _check_sources)
    app.connect("html-page-context", _page)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
