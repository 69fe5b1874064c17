"""A real headless Chromium driven over the DevTools protocol (websocket-client), for the report tests.

Only what those tests need: open a file, collect console messages, exceptions and log errors,
evaluate JavaScript, resize the viewport, emulate print media, take a full-page screenshot.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

INSTALL_HINT = "Debian's chromium is missing: `apt-get install -y chromium` (scripts/test.sh installs it)"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium and its first page; a context manager that always stops the process."""

    def __init__(self, port: int, width: int = 1000, height: int = 800):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self._profile = tempfile.TemporaryDirectory(prefix="tik-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
             f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)   # its own process group: its helpers are stopped with it
        self.events: list[dict] = []
        self._id = 0
        self.ws = self._connect(port)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _connect(self, port: int):
        import websocket

        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                                       suppress_origin=True)
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port {port} (exit {self.proc.poll()})")
            time.sleep(0.2)

    def call(self, method: str, **params) -> dict:
        """Send one command; events that arrive meanwhile are kept in self.events."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def open(self, path: Path, timeout_s: float = 60) -> None:
        """Navigate to a local file and wait for its load event."""
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading in {timeout_s} s")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:60]}...: {res['exceptionDetails']}")
        return res["result"].get("value")

    def problems(self) -> list[str]:
        """Console messages, uncaught exceptions and browser log errors (a failed load among them)."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled":
                out.append(f"console.{p.get('type')}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def viewport(self, width: int, height: int = 800) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def media(self, kind: str) -> None:
        """'print' or 'screen' (CSS media queries)."""
        self.call("Emulation.setEmulatedMedia", media=kind)

    def screenshot(self, path: Path, width: int) -> Path:
        """The whole page at `width` CSS pixels, as PNG."""
        self.viewport(width)
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            # The whole group: chromium's helper processes outlive the browser process for a moment
            # and still write into the profile, which then cannot be removed.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            for _ in range(50):    # helpers that ignored SIGTERM: gone within a few seconds
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._profile.cleanup()
