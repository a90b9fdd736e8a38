"""The page on a workshop's two screens, a phone (390 × 844) and a projector (1280 × 720), as pictures in this folder.

Starts the app on the embedded model, presses *Run the whole lab* in headless Chromium, and saves the opening page
and, after the run, the Train and Compare tabs at both sizes (the opening page as its first screen, the tabs whole).
Run it with ``make screenshots``; ``tests/test_browser.py`` checks the same layout on every ``make test``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent
OUT = HERE / "screenshots"
SIZES = {"phone": {"width": 390, "height": 844}, "projector": {"width": 1280, "height": 720}}
CHROMIUM = os.environ.get("ALIGNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    from alignlab.ui import build_app, launch_options

    demo = build_app()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    OUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport=SIZES["projector"])
            page.goto(url)
            expect(page.get_by_role("heading", name="AlignLab")).to_be_visible()
            for size, viewport in SIZES.items():
                page.set_viewport_size(viewport)
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / f"{size}-open.png"))
            page.set_viewport_size(SIZES["projector"])
            page.get_by_role("button", name="Run the whole lab").click()
            expect(page.locator("#compare-health")).to_contain_text("Health verdict", timeout=600_000)
            for size, viewport in SIZES.items():
                page.set_viewport_size(viewport)
                for tab, name in (("3 · Train", "train"), ("4 · Compare", "compare")):
                    page.get_by_role("tab", name=tab).click()
                    page.wait_for_timeout(1000)  # the plots redraw at the new width
                    path = OUT / f"{size}-{name}-after-a-run.jpg"
                    page.screenshot(path=str(path), full_page=True, type="jpeg", quality=60)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {', '.join(sorted(p.name for p in OUT.iterdir()))} to {OUT}")


if __name__ == "__main__":
    main()
