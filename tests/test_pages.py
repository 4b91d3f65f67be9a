"""Every built page as a reader sees it: opened in headless Chromium from ``file://`` with the network off
(marker ``book``; run after ``make html``).

Per page: every plotly figure has drawn (its SVG is in the DOM), MathJax has typeset every equation, every
widget view has rendered, the console shows no error, and no request left the machine. A screenshot of each
page is written to ``_build/screenshots/``.

Chromium is Debian's ``chromium`` (``make env`` installs it), driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``): the standard library is the whole client, no driver or browser download.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts)) if HTML.is_dir() else []
WIDTH, HEIGHT, MAX_SHOT_HEIGHT = 1280, 900, 16000
REDIRECT = re.compile(r'<meta http-equiv="Refresh"', re.I)
WAIT_S = 60  # a hang guard for one page: a page that has not drawn by then fails with what is missing
# the flags of a closed machine: no background connections, and every host name resolves to nothing
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={WIDTH},{HEIGHT}",
         "--force-device-scale-factor=1", "--remote-debugging-pipe"]

# runs in the page once it has loaded: waits until MathJax is done and every figure and widget has drawn
# (or WAIT_S has passed) and returns what it found
PROBE = """
(async () => {
  const until = Date.now() + %d * 1000, sleep = ms => new Promise(r => setTimeout(r, ms));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const state = () => {
    const figs = [...document.querySelectorAll('div.plotly-graph-div')];
    const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
    const maths = [...document.querySelectorAll('span.math, div.math')];
    return {
      figures: figs.map(d => d.id),
      undrawn: figs.filter(d => !d.querySelector('svg.main-svg')).map(d => d.id),
      widgets: views.length,
      unrendered: views.filter(v => { const w = v.previousElementSibling;
        return !(w && w.classList.contains('widget-subarea') && w.querySelector('.jupyter-widgets')); }).length,
      maths: maths.length,
      untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
      mathjax: !!(window.MathJax && MathJax.startup),
    };
  };
  let s = state();
  while ((s.undrawn.length || s.unrendered || s.untypeset.length) && Date.now() < until) { await sleep(100); s = state(); }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  s.height = Math.ceil(document.documentElement.scrollHeight);
  return JSON.stringify(s);
})()
""" % WAIT_S


_ON_FDS_3_4 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Chromium:
    """Headless Chromium and the DevTools protocol over its pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix="mmsa-chromium-")
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()
        # the child's ends move to fd 10 or above, so that putting one on fd 3 cannot overwrite the other
        to_r, from_w = (_high_fd(fd) for fd in (to_r, from_w))
        # a Python trampoline puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them
        self.log = Path(self.profile) / "stderr.log"  # a file, not a pipe: Chromium's chatter can never block it
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ON_FDS_3_4, str(to_r), str(from_w), exe, *FLAGS,
                 f"--user-data-dir={self.profile}/profile", "about:blank"],
                pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        os.close(to_r)
        os.close(from_w)
        self._id, self._replies, self.events = 0, {}, queue.Queue()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _read(self):
        buf = b""
        with os.fdopen(self._from, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                *msgs, buf = buf.split(b"\0")
                for m in msgs:
                    msg = json.loads(m)
                    if "id" in msg:
                        with self._cond:
                            self._replies[msg["id"]] = msg
                            self._cond.notify_all()
                    else:
                        self.events.put(msg)
        with self._cond:
            self._replies[None] = {"error": {"message": "Chromium closed its pipe"}}
            self._cond.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = WAIT_S + 30, **params) -> dict:
        with self._cond:
            self._id += 1
            i = self._id
        msg = {"id": i, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: i in self._replies or None in self._replies, timeout):
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            reply = self._replies.pop(i, None) or self._replies[None]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}; stderr: {self.stderr_tail()}")
        return reply["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def wait_event(self, method: str, timeout: float) -> list[dict]:
        """Events up to and including the first ``method`` event (all of them if it does not come)."""
        seen = []
        while True:
            try:
                ev = self.events.get(timeout=timeout)
            except queue.Empty:
                return seen
            seen.append(ev)
            if ev.get("method") == method:
                return seen

    def drain(self) -> list[dict]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def stderr_tail(self) -> str:
        return self.log.read_bytes()[-2000:].decode(errors="replace")

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to)
        shutil.rmtree(self.profile, ignore_errors=True)


def problems(events: list[dict]) -> tuple[list[str], list[str]]:
    """Console errors and uncaught exceptions; requests for anything that is not a local file."""
    errors, remote = [], []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')} ({d.get('url', '')}:{d.get('lineNumber')})")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry']['source']}: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
        elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:", "blob:", "about:")):
            remote.append(p["request"]["url"])
    return errors, remote


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium is not installed: `make env` installs Debian's chromium (needs apt-get and root)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    browser = Chromium(exe)
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.page(f"{domain}.enable")
    browser.page("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield browser
    browser.close()


@pytest.mark.book
@pytest.mark.parametrize("page", PAGES or [None])
def test_page_renders_offline(chromium, page):
    if page is None:
        pytest.skip("_build/html does not exist: build the book first (`make html`)")
    chromium.page("Page.navigate", url=(HTML / page).as_uri())
    events = chromium.wait_event("Page.loadEventFired", WAIT_S)
    if REDIRECT.search((HTML / page).read_text(encoding="utf-8", errors="replace")):  # index.html: on to the root page
        events += chromium.wait_event("Page.loadEventFired", WAIT_S)
    assert events and events[-1]["method"] == "Page.loadEventFired", f"{page}: did not finish loading in {WAIT_S} s"
    found = json.loads(chromium.page("Runtime.evaluate", expression=PROBE, awaitPromise=True, returnByValue=True)["result"]["value"])
    height = min(max(found["height"], HEIGHT), MAX_SHOT_HEIGHT)
    shot = chromium.page("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip=dict(x=0, y=0, width=WIDTH, height=height, scale=1))
    out = SHOTS / page.replace("/", "__").replace(".html", ".png")
    out.write_bytes(base64.b64decode(shot["data"]))
    errors, remote = problems(events + chromium.drain())

    bad = []
    if found["undrawn"]:
        bad.append(f"figures not drawn (no SVG): {found['undrawn']} of {len(found['figures'])}")
    if found["maths"] and not found["mathjax"]:
        bad.append(f"{found['maths']} equations but MathJax did not load")
    elif found["untypeset"]:
        bad.append(f"{len(found['untypeset'])} of {found['maths']} equations not typeset, e.g. {found['untypeset'][:3]}")
    if found["unrendered"]:
        bad.append(f"{found['unrendered']} of {found['widgets']} widgets not rendered")
    if errors:
        bad.append(f"console errors: {errors[:5]}")
    if remote:
        bad.append(f"requests that would need the network: {sorted(set(remote))[:5]}")
    assert not bad, f"{page} (screenshot {out.relative_to(REPO)}): " + "; ".join(bad)
