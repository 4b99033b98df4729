"""A minimal Chrome DevTools Protocol client for page checks in headless Chromium (not a test).

Real (trusted) mouse events go through ``Input.dispatchMouseEvent``, exactly as
a person's clicks would. The websocket is tornado's (installed with dask's
``distributed``), so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path


def find_chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


class Browser:
    """One headless Chromium with one page; ``call`` sends a CDP command and returns its result."""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 2200, downloads: Path | None = None):
        from tornado.websocket import websocket_connect

        exe = find_chromium()
        if exe is None:
            raise RuntimeError("no chromium")
        profile = Path(profile)
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def connect():
            return await websocket_connect(f"ws://127.0.0.1:{port}{path}", max_message_size=256 * 1024 * 1024)

        self.ws = self.loop.run_until_complete(connect())
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        if downloads is not None:
            self.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.page("Page.enable")

    def call(self, method: str, session: str | None = None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        async def write():
            await self.ws.write_message(json.dumps(msg))

        async def read():
            return await asyncio.wait_for(self.ws.read_message(), 120)

        self.loop.run_until_complete(write())
        while True:
            raw = self.loop.run_until_complete(read())
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method: str, **params):
        return self.call(method, self.session, **params)

    def goto(self, url: str, timeout: float = 60) -> None:
        self.page("Page.navigate", url=url)
        deadline = time.time() + timeout
        while self.eval("document.readyState") != "complete" or not self.eval("!!window.galearnMap"):
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not load")
            time.sleep(0.1)

    def eval(self, expression: str):
        res = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        self.page("Input.dispatchMouseEvent", type=kind, x=float(x), y=float(y), **extra)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def click_selector(self, selector: str) -> None:
        r = self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block:'center'}});"
                      "var r=e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];})()")
        self.click(*r)

    def drag(self, points) -> None:
        """Press at the first point, move through the others, release at the last (a lasso)."""
        self.mouse("mouseMoved", *points[0])
        self.mouse("mousePressed", *points[0], button="left", clickCount=1)
        for p in points[1:]:
            self.mouse("mouseMoved", *p, button="left", buttons=1)
        self.mouse("mouseReleased", *points[-1], button="left", clickCount=1)

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        params = {"format": "png"}
        if clip:
            params["clip"] = {"scale": 1, **clip}
        data = self.page("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            if getattr(self, "loop", None) is not None:
                self.loop.close()
                asyncio.set_event_loop(None)
