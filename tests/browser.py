"""Open a page in Debian's headless Chromium (Chrome DevTools Protocol through choreographer) and report
what a reader would see: figures drawn, JavaScript errors, overflow, text cut off or under a mode bar.

choreographer never downloads a browser here: it is given the installed binary's path.

Example:
    seen = open_page(Path("runs/sweep/report.html"), screenshot=Path("out/report.png"))
    seen.figures, seen.drawn, seen.errors, seen.scroll_width
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from base64 import b64decode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    browser = os.environ.get("BROWSER_PATH")
    if browser and os.access(browser, os.X_OK):
        return browser
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def no_browser_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import choreographer  # noqa: F401
    except ImportError:
        return "needs choreographer (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "needs a Chromium: apt-get install chromium (or BROWSER_PATH=/path/to/chrome)"
    return None


@dataclass
class Seen:
    """What the page showed once every figure had drawn (or the wait ran out)."""

    figures: int  # plotly figure divs
    drawn: int  # of them, those holding a plotly .main-svg
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors, failed loads
    scroll_width: int = 0
    viewport_width: int = 0
    covered: list[str] = field(default_factory=list)  # text under a mode bar
    cut: list[str] = field(default_factory=list)  # text reaching outside its figure
    collide: list[str] = field(default_factory=list)  # titles, annotations, legend entries drawn over each other
    first_screen: str = ""  # headings, paragraphs and list items that start within the first screen
    facts: dict[str, Any] = field(default_factory=dict)


# Every text of a plotly figure (titles, axis titles, tick labels, annotations, legend) must lie inside its
# figure and clear of its mode bar.
MEASURE = """
(() => {
  const box = e => e.getBoundingClientRect();
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const covered = [], cut = [];
  for (const div of divs) {
    const frame = box(div);
    const bar = div.querySelector('.modebar');
    const barBox = bar && getComputedStyle(bar).display !== 'none' ? box(bar) : null;
    for (const t of div.querySelectorAll('text')) {
      const r = box(t), label = (t.textContent || '').trim();
      if (!label || r.width === 0) continue;
      if (barBox && overlap(r, barBox)) covered.push(div.id + ': ' + label);
      if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1 || r.bottom > frame.bottom + 1)
        cut.push(div.id + ': ' + label);
    }
  }
  const collide = [];
  for (const div of divs) {
    const texts = [...div.querySelectorAll('.infolayer text')].filter(t => (t.textContent || '').trim() && box(t).width > 0);
    for (let i = 0; i < texts.length; i++)
      for (let j = i + 1; j < texts.length; j++) {
        const a = box(texts[i]), b = box(texts[j]);
        const inner = r => ({left: r.left + 3, right: r.right - 3, top: r.top + 3, bottom: r.bottom - 3});
        if (overlap(inner(a), inner(b)) && !texts[i].contains(texts[j]) && !texts[j].contains(texts[i]))
          collide.push(div.id + ': ' + texts[i].textContent.trim() + ' / ' + texts[j].textContent.trim());
      }
  }
  const firstScreen = [...document.querySelectorAll('h1,h2,h3,p,li,summary,th,figcaption')]
    .filter(e => box(e).top < window.innerHeight).map(e => e.innerText.trim()).join(String.fromCharCode(10));
  return JSON.stringify({
    figures: divs.length,
    drawn: divs.filter(d => d.querySelector('.main-svg')).length,
    scroll_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
    covered, cut, collide,
    first_screen: firstScreen,
  });
})()
"""

# An exported SVG (kaleido): every text inside the image, and no two titles or annotations over each other.
SVG_MEASURE = """
(() => {
  const box = e => e.getBoundingClientRect();
  const frame = box(document.documentElement);
  const cut = [], collide = [];
  const texts = [...document.querySelectorAll('text')].filter(t => (t.textContent || '').trim() && box(t).width > 0);
  for (const t of texts) {
    const r = box(t);
    if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1 || r.bottom > frame.bottom + 1)
      cut.push(t.textContent.trim());
  }
  const info = [...document.querySelectorAll('.infolayer text')].filter(t => (t.textContent || '').trim() && box(t).width > 0);
  const inner = r => ({left: r.left + 3, right: r.right - 3, top: r.top + 3, bottom: r.bottom - 3});
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  for (let i = 0; i < info.length; i++)
    for (let j = i + 1; j < info.length; j++)
      if (overlap(inner(box(info[i])), inner(box(info[j]))) && !info[i].contains(info[j]) && !info[j].contains(info[i]))
        collide.push(info[i].textContent.trim() + ' / ' + info[j].textContent.trim());
  return JSON.stringify({figures: 1, drawn: texts.length > 0 ? 1 : 0, scroll_width: frame.width, viewport_width: frame.width, covered: [], cut, collide});
})()
"""

DRAWN = "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))"


async def evaluate(tab: Any, expression: str) -> Any:
    response = await tab.send_command("Runtime.evaluate", params={"expression": expression, "returnByValue": True})
    if "exceptionDetails" in response["result"]:
        raise RuntimeError(f"the page's script failed: {response['result']['exceptionDetails']}")
    return response["result"]["result"].get("value")


async def visit(path: Path, width: int, height: int, screenshot: Path | None, timeout: float) -> Seen:
    import choreographer

    errors: list[str] = []

    async def on_exception(message: dict) -> None:
        details = message["params"]["exceptionDetails"]
        errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))

    async def on_console(message: dict) -> None:
        if message["params"]["type"] in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in message["params"]["args"]))

    async def on_log(message: dict) -> None:
        entry = message["params"]["entry"]
        if entry["level"] == "error":
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    async with choreographer.Browser(path=chromium_path(), headless=True) as browser:
        tab = await browser.create_tab("")  # size: the device metrics below
        tab.subscribe("Runtime.exceptionThrown", on_exception)
        tab.subscribe("Runtime.consoleAPICalled", on_console)
        tab.subscribe("Log.entryAdded", on_log)
        for domain in ("Runtime", "Log", "Page"):
            await tab.send_command(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        await tab.send_command("Emulation.setDeviceMetricsOverride", params=metrics)
        loaded = tab.subscribe_once("Page.loadEventFired")
        await tab.send_command("Page.navigate", params={"url": path.resolve().as_uri()})
        await asyncio.wait_for(loaded, timeout)
        waited = 0.0
        while not await evaluate(tab, DRAWN) and waited < timeout:
            await asyncio.sleep(0.25)
            waited += 0.25
        await asyncio.sleep(0.5)  # let plotly finish laying out text after the first draw
        seen = Seen(**json.loads(await evaluate(tab, SVG_MEASURE if path.suffix == ".svg" else MEASURE)))
        seen.errors = errors
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            shot = await tab.send_command("Page.captureScreenshot", params={"format": "png"})
            screenshot.with_name(screenshot.stem + "_first_screen.png").write_bytes(b64decode(shot["result"]["data"]))
            full = await evaluate(tab, "document.documentElement.scrollHeight")
            await tab.send_command("Emulation.setDeviceMetricsOverride", params=metrics | {"height": int(full)})
            await asyncio.sleep(0.5)
            shot = await tab.send_command("Page.captureScreenshot", params={"format": "png"})
            screenshot.write_bytes(b64decode(shot["result"]["data"]))
    return seen


def open_page(path: Path, width: int = 1400, height: int = 900, screenshot: Path | None = None, timeout: float = 60) -> Seen:
    """Open ``path`` (a page, or an exported SVG) at ``width`` × ``height`` CSS pixels and measure it; with ``screenshot``, save the whole
    page there and the first screen beside it (``*_first_screen.png``)."""
    return asyncio.run(visit(path, width, height, screenshot, timeout))


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$STEERSCOPE_ARTIFACTS`` when set (CI keeps it), else the test's tmp path."""
    folder = Path(os.environ.get("STEERSCOPE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
