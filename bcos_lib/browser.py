"""The book in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by selenium.  Used by the book's test and by ``python -m bcos_lib.browser`` (the
screenshots that the README shows, taken from a real ``make book``).

``page_problems`` lists what a reader would see broken on one page: an image that did not
load, a script or style sheet whose file is not there, an internal link to a page that does
not exist, and errors in the browser console.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["chromium_available", "chromium_driver", "page_problems", "explorer_states", "screenshots"]

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_available() -> tuple[str | None, str | None]:
    """(browser binary, chromedriver binary), None where missing."""
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    return browser, shutil.which("chromedriver")


def chromium_driver(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium, no network needed (file:// pages only)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_available()
    if browser is None or driver is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--allow-file-access-from-files", "--hide-scrollbars"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _local_file(url: str) -> Path | None:
    u = urlparse(url)
    return Path(unquote(u.path)) if u.scheme == "file" else None


_PAGE_STATE = """
const abs = (el, a) => el[a] || '';
return {
  ready: document.readyState,
  images: Array.from(document.images).filter(i => i.getAttribute('src'))
          .map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
  scripts: Array.from(document.querySelectorAll('script[src]')).map(s => s.src),
  styles: Array.from(document.querySelectorAll('link[rel=stylesheet]')).map(l => l.href),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  resources: performance.getEntriesByType('resource').map(r => r.name),
};
"""


def page_problems(driver: Any, url: str) -> list[str]:
    """Open ``url`` and list what is broken on it (empty: nothing)."""
    driver.get(url)
    driver.get_log("browser")  # the log of earlier pages is not this page's
    driver.get(url)
    st = driver.execute_script(_PAGE_STATE)
    problems = [f"image did not load: {i['src']}" for i in st["images"] if not i["ok"]]
    for kind in ("scripts", "styles", "resources"):
        for ref in st[kind]:
            p = _local_file(ref)
            if p is not None and not p.is_file():
                problems.append(f"{kind[:-1]} file missing: {p}")
    for ref in st["resources"] + st["scripts"] + st["styles"] + [i["src"] for i in st["images"]]:
        if urlparse(ref).scheme in ("http", "https"):
            problems.append(f"fetched from the network: {ref}")
    for ref in st["links"]:
        p = _local_file(ref.split("#", 1)[0])
        if p is not None and not (p.is_file() or (p.is_dir() and (p / "index.html").is_file())):
            problems.append(f"internal link to a missing file: {p}")
    # formulas: MathJax typesets them after the page has loaded
    if driver.execute_script("return document.querySelectorAll('div.math, span.math').length"):
        for _ in range(100):
            if driver.execute_script("return document.querySelectorAll('.MathJax, .MathJax_Display').length"):
                break
            time.sleep(0.1)
        else:
            problems.append("formulas not typeset (MathJax did not render them)")
    for entry in driver.get_log("browser"):
        # MathJax 2 probes its web font with a font at about:blank, which Chromium refuses for a
        # page opened from the file system (over http it is allowed); the formulas render all the
        # same (checked above), so that one message is not a problem of the book
        if entry.get("level") == "SEVERE" and "about:blank" not in entry.get("message", ""):
            problems.append(f"console error: {entry.get('message')}")
    return problems


def explorer_states(driver: Any, url: str) -> list[dict[str, Any]]:
    """Open the explorer, change each control in turn and return what it showed after each
    change: the selected values, the image and map sources and whether both loaded."""

    from selenium.webdriver.support.ui import Select

    driver.get(url)
    read = ("const m = document.getElementById('ex-map'), i = document.getElementById('ex-img');"
            "return {model: document.getElementById('ex-model').value, image: document.getElementById('ex-image').value,"
            " cls: document.getElementById('ex-class').value, attribution: document.getElementById('ex-attribution').value,"
            " img: i.src, img_ok: i.complete && i.naturalWidth > 0, map: m.getAttribute('src') || '',"
            " map_ok: m.complete && m.naturalWidth > 0, caption: document.getElementById('ex-map-cap').textContent,"
            " logits: document.querySelectorAll('#ex-logits .ex-row').length};")

    def state(change: str) -> dict[str, Any]:
        for _ in range(50):  # the new PNG loads asynchronously
            s = driver.execute_script(read)
            if (s["img_ok"] and (s["map_ok"] or not s["map"])):
                break
            time.sleep(0.05)
        return {"change": change, **s}

    states = [state("opened")]
    for control in ("ex-attribution", "ex-class", "ex-image", "ex-model"):
        sel = Select(driver.find_element("id", control))
        options = [o.get_attribute("value") for o in sel.options]
        current = sel.first_selected_option.get_attribute("value")
        other = next((o for o in options if o != current), None)
        if other is not None:
            sel.select_by_value(other)
            states.append(state(control))
    return states


def screenshots(html_dir: Path, out_dir: Path, driver: Any = None) -> list[Path]:
    """The landing page and the explorer as PNGs: ``book_landing.png``, ``book_explorer.png``."""
    own = driver is None
    driver = driver or chromium_driver()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = []
        for page, name in (("README.html", "book_landing.png"), ("explorer.html", "book_explorer.png")):
            driver.get((Path(html_dir) / page).resolve().as_uri())
            if page == "explorer.html":  # the controls and the panels, not the page's introduction
                driver.execute_script("document.getElementById('explorer').scrollIntoView();"
                                      "window.scrollBy(0, -70);")
            driver.save_screenshot(str(out_dir / name))
            paths.append(out_dir / name)
        return paths
    finally:
        if own:
            driver.quit()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bcos_lib.browser",
                                description="screenshots of a built book (landing page and explorer)")
    p.add_argument("--html", default="build/book/html")
    p.add_argument("--out", default="docs/img")
    a = p.parse_args()
    for path in screenshots(Path(a.html), Path(a.out)):
        print(f"wrote {path}")
    sys.exit(0)
