"""The whole journey in a real browser: headless Chromium (Debian's) driven by Playwright.

Baseline -> edit a pair -> train (the plots redraw while it runs) -> compare, on the tiny model,
asserting only on what a person sees. A screenshot of each tab goes to ``test-output/``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

playwright_api.expect.set_options(timeout=60_000)  # model work on 2 shared cores takes seconds
CHROMIUM = os.environ.get("ALIGNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEPS = 80  # long enough on the tiny model to watch the plots redraw several times
REMEDY_STEPS = 80  # at the largest learning rate and the smallest β, the tiny model's answers break and it drifts


@pytest.fixture(scope="module")
def app(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(demo, url): the app on the tiny model."""
    os.environ["ALIGNLAB_DEFAULT_MODEL"] = str(tiny_chat_dir)
    from alignlab.ui import build_app, launch_options

    demo = build_app()
    demo.session_store.root = tmp_path_factory.mktemp("browser-sessions")
    demo.shared.clear()  # the journey must train for real, not replay an identical run from another module
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # `make test` installs it in CI: missing there is a defect, not a skip
            pytest.fail("Chromium is not installed although `make test` installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app[1])
    yield page
    page.close()


def edit_cell(page, table: str, row: int, col: int, text: str) -> None:
    """Double-click a table cell, replace its text, and press Enter, as a person would."""
    page.locator(f"{table} [data-testid='cell-{row}-{col}']").dblclick()
    editor = page.get_by_role("textbox", name="Edit cell")
    editor.fill(text)
    editor.press("Enter")


WATCH_TRAINING = """() => {
    // Record, in the page itself, every redraw of the status line and the loss plot during the run:
    // what a person watching the screen would have seen, without the test's polling lag.
    const status = document.querySelector('#train-status');
    const plot = document.querySelector('#plot-loss');
    const heldout = document.querySelector('#plot-heldout');
    const picture = (element) => {
        const c = element.querySelector('canvas');
        const text = c ? c.toDataURL() : (element.querySelector('svg') || {outerHTML: ''}).outerHTML;
        let h = 0;
        for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
        return text.length + ':' + h;
    };
    window.__seen = [];
    const record = () => window.__seen.push(
        {status: status.innerText, picture: picture(plot), heldout: picture(heldout)});
    const observer = new MutationObserver(record);
    observer.observe(status, {subtree: true, childList: true, characterData: true});
    observer.observe(plot, {subtree: true, childList: true, attributes: true});
    observer.observe(heldout, {subtree: true, childList: true, attributes: true});
}"""


PHONE = {"width": 390, "height": 844}
PROJECTOR = {"width": 1280, "height": 720}
STEP_TABS = ("1 · Baseline", "2 · Dataset", "3 · Train", "4 · Compare")
#: The buttons a presenter presses in a demo, by the tab they sit on (None: the header, above every tab).
DEMO_BUTTONS = {
    None: ("Run the whole lab",),
    "3 · Train": ("Start training", "Compare methods"),
    "4 · Compare": ("Compare before and after",),
}
TITLE_BOX = """() => {
    const title = document.querySelector('#header h1');
    const word = document.createRange();
    word.selectNodeContents(title);
    return {box: title.getBoundingClientRect().width, word: word.getBoundingClientRect().width,
            lines: new Set(Array.from(word.getClientRects(), (r) => Math.round(r.top))).size};
}"""


def sideways_scroll(page) -> int:
    """How many pixels the page scrolls sideways (0: none)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def in_first_screen(page, name: str) -> bool:
    """Whether the button ``name`` is visible without scrolling, the page at its top."""
    page.evaluate("window.scrollTo(0, 0)")
    button = page.get_by_role("button", name=name, exact=True)
    box = button.bounding_box()
    return (
        button.is_visible()
        and box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= page.viewport_size["height"]
    )


def screens(page, output_dir: Path, what: str, tabs: dict[str, str | None]) -> None:
    """Screenshots of the first screen at both sizes: ``screen-<size>-<name>.png`` for each of ``tabs``."""
    for size, viewport in (("phone", PHONE), ("projector", PROJECTOR)):
        page.set_viewport_size(viewport)
        for name, tab in tabs.items():
            if tab:
                page.get_by_role("tab", name=tab).click()
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(output_dir / f"screen-{size}-{name}{what}.png"))


def test_on_a_phone_the_header_wraps_and_every_step_is_one_click_away(app, browser, output_dir: Path) -> None:
    """390 × 844: the title on one line, the introduction full width, a normal-sized Run the whole lab button in
    the first screen; every step one click away at 390 and 360 px, and no page that scrolls sideways."""
    expect = playwright_api.expect
    page = browser.new_page(viewport=PHONE)
    page.goto(app[1])
    expect(page.get_by_role("heading", name="AlignLab")).to_be_visible()
    title = page.evaluate(TITLE_BOX)
    assert title["lines"] == 1 and title["box"] >= title["word"], f"the title breaks inside the word: {title}"
    header = page.locator("#header").bounding_box()
    assert header["width"] >= PHONE["width"] * 0.8, f"the introduction is squeezed into {header['width']:.0f} px"
    run_all = page.get_by_role("button", name="Run the whole lab").bounding_box()
    assert run_all["height"] <= 80, f"the Run the whole lab button is {run_all['height']:.0f} px tall"
    assert in_first_screen(page, "Run the whole lab")
    for width in (PHONE["width"], 360):
        page.set_viewport_size({"width": width, "height": PHONE["height"]})
        for tab in STEP_TABS:  # each step in one click, none hidden in an overflow menu
            step = page.get_by_role("tab", name=tab)
            expect(step).to_be_visible()
            step.click()
            expect(step).to_have_attribute("aria-selected", "true")
            assert sideways_scroll(page) <= 0, f"{tab} scrolls sideways at {width} px"
    page.get_by_role("tab", name=STEP_TABS[0]).click()
    screens(page, output_dir, "", {"open": None})
    page.close()


def test_on_a_projector_the_demo_buttons_are_in_the_first_screen(app, browser) -> None:
    """1280 × 720: the buttons a presenter presses are visible from the top of their tab, the Train tab's
    log, recipe export and map are folded."""
    expect = playwright_api.expect
    page = browser.new_page(viewport=PROJECTOR)
    page.goto(app[1])
    expect(page.get_by_role("heading", name="AlignLab")).to_be_visible()
    for tab, buttons in DEMO_BUTTONS.items():
        if tab:
            page.get_by_role("tab", name=tab).click()
        for name in buttons:
            assert in_first_screen(page, name), f"{name} is below the first screen of {tab or 'the page'}"
    page.get_by_role("tab", name="3 · Train").click()
    for folded in ("#train-log", "#recipe-export", "#method-map"):  # the Train tab's less-used parts
        expect(page.locator(folded)).to_be_hidden()
    assert sideways_scroll(page) <= 0
    page.close()


def test_whole_journey_in_a_browser(page, output_dir: Path) -> None:
    expect = playwright_api.expect
    expect(page.get_by_role("heading", name="AlignLab")).to_be_visible()

    # 1. Baseline: one click loads the model and records the answers.
    expect(page.get_by_text("Step 1 — Baseline.")).to_be_visible()
    page.get_by_role("button", name="Load model and record answers").click()
    expect(page.locator("#baseline-status")).to_contain_text("Recorded 7 answers")
    expect(page.locator("#model-status")).to_contain_text("Loaded")
    expect(page.locator("#baseline-table")).to_contain_text("What is 12 times 12?")
    page.screenshot(path=str(output_dir / "browser-1-baseline.png"), full_page=True)

    # 2. Dataset: a bad edit is named by row, a good one makes the dataset ready again.
    page.get_by_role("tab", name="2 · Dataset").click()
    validation = page.locator("#dataset-validation")
    expect(validation).to_contain_text("Ready: 13 training pairs, 14 held-out pairs")
    edit_cell(page, "#pairs-table", 0, 1, "That is your own fault. You should have practised more.")
    expect(validation).to_contain_text("pairs row 1")
    expect(validation).to_contain_text("identical")
    new_answer = "That sounds hard, and it is completely normal to feel let down. You can book another test soon."
    edit_cell(page, "#pairs-table", 0, 1, new_answer)
    expect(validation).to_contain_text("Ready: 13 training pairs")
    expect(page.locator("#pairs-table")).to_contain_text("completely normal to feel let down")
    page.screenshot(path=str(output_dir / "browser-2-dataset.png"), full_page=True)

    # 3. Train: the plots and the log redraw while the run goes on; health appears at the end.
    page.get_by_role("tab", name="3 · Train").click()
    steps_box = page.get_by_label("Steps", exact=True)
    steps_box.fill(str(STEPS))
    steps_box.press("Tab")
    page.evaluate(WATCH_TRAINING)
    page.get_by_role("button", name="Start training").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text(f"Finished {STEPS} of {STEPS} steps", timeout=240_000)
    seen = page.evaluate("window.__seen")
    during_run = [s for s in seen if f"of {STEPS}" in s["status"] and " left" in s["status"]]
    shown_steps = {s["status"].split(" of ")[0] for s in during_run}
    assert len(shown_steps) >= 3, f"the progress line showed only {sorted(shown_steps)} while training"
    pictures = {s["picture"] for s in during_run}
    assert len(pictures) >= 3, "the loss plot did not redraw while training ran"
    curves = {s["heldout"] for s in during_run}
    assert len(curves) >= 3, "the live held-out curve did not redraw while training ran"
    expect(page.locator("#train-health")).to_contain_text("Training health")
    page.get_by_text("The log: every step's figures").click()  # folded by default
    expect(page.locator("#train-log")).to_contain_text(str(STEPS))
    page.screenshot(path=str(output_dir / "browser-3-train.png"), full_page=True)

    # 4. Compare: before vs after, the changed count, the evidence, the verdict, the report.
    page.get_by_role("tab", name="4 · Compare").click()
    page.get_by_role("button", name="Compare before and after").click()
    expect(page.locator("#compare-summary")).to_contain_text("answers changed")
    expect(page.locator("#compare-summary")).to_contain_text("Tracked in trackio: project alignlab")
    expect(page.locator("#compare-table")).to_contain_text("Before training")
    expect(page.locator("#compare-table")).to_contain_text("What is 12 times 12?")
    evidence = page.locator("#compare-evidence")
    for reading in ("Held-out pairs", "Contrast pairs", "Capability", "KL drift", "Perplexity"):
        expect(evidence).to_contain_text(reading)
    expect(evidence).to_contain_text("The answers themselves")
    expect(evidence).to_contain_text("distinct answers")
    expect(page.locator("#compare-health")).to_contain_text("Health verdict")
    expect(page.locator("#compare-health code").first).to_be_visible()  # each finding shows its code
    expect(page.locator("#report-file a")).to_have_attribute("href", re.compile(r"alignlab-report\.json$"))
    page.screenshot(path=str(output_dir / "browser-4-compare.png"), full_page=True)

    # Take it home: the model folder as a zip, offered for download.
    page.get_by_text("Take it home: save the model, push it to the Hub").click()
    page.get_by_role("button", name="Save the model", exact=True).click()
    expect(page.locator("#export-status")).to_contain_text("Saved alignlab-dpo-")
    expect(page.locator("#export-file a")).to_have_attribute("href", re.compile(r"alignlab-dpo-[\w-]+\.zip$"))

    # The same run on a phone: nothing scrolls sideways, each answer before above its answer after.
    page.set_viewport_size(PHONE)
    for tab in STEP_TABS:
        page.get_by_role("tab", name=tab).click()
        assert sideways_scroll(page) <= 0, f"{tab} after a run scrolls sideways on a phone"
    before = page.locator("#compare-table td.al-before").first.bounding_box()
    after = page.locator("#compare-table td.al-after").first.bounding_box()
    assert after["y"] >= before["y"] + before["height"] - 1 and after["width"] >= PHONE["width"] * 0.6
    screens(page, output_dir, "-after-a-run", {"train": "3 · Train", "compare": "4 · Compare"})


def test_out_of_order_then_the_whole_lab_then_closing_the_tab(app, browser) -> None:
    """A fresh tab clicking Compare first is told what to do; the presenter button fills every tab;
    Stop stops a run; closing the tab deletes the session and its files."""
    expect = playwright_api.expect
    demo, url = app
    before = set(demo.session_store.sessions())
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="4 · Compare").click()
    page.get_by_role("button", name="Compare before and after").click()
    expect(page.get_by_text("Record the baseline first").first).to_be_visible()

    page.get_by_role("button", name="Run the whole lab").click()
    expect(page.locator("#compare-summary")).to_contain_text("answers changed", timeout=240_000)
    expect(page.locator("#compare-health")).to_contain_text("Health verdict")
    page.get_by_role("tab", name="1 · Baseline").click()
    expect(page.locator("#baseline-status")).to_contain_text("Recorded 7 answers")
    page.get_by_role("tab", name="3 · Train").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("Finished")

    # Stop: a long run is stopped at the end of a step; the health reading still appears.
    steps_box = page.get_by_label("Steps", exact=True)
    steps_box.fill("500")
    steps_box.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(status).to_contain_text("of 500", timeout=120_000)
    page.get_by_role("button", name="Stop").click()
    expect(status).to_contain_text("Stopped after")
    expect(page.locator("#train-health")).to_contain_text("Training health")

    mine = [s for k, s in demo.session_store.sessions().items() if k not in before]
    assert len(mine) == 1 and mine[0].directory.is_dir(), "this tab should have exactly one session, with files"
    page.close()  # the heartbeat drops, demo.unload runs: this tab's session and files go
    deadline = time.monotonic() + 60
    while mine[0].key in demo.session_store and time.monotonic() < deadline:
        time.sleep(0.5)
    assert mine[0].key not in demo.session_store, "closing the tab did not end its session"
    gone = mine[0].directory
    # The files go right after the session, once a run still finishing its step has ended.
    while gone.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not gone.exists(), "closing the tab left the session's files behind"


def test_two_methods_compared_with_one_click(app, browser, output_dir: Path) -> None:
    """A presenter picks two methods and presses one button: the runs go one after another, their
    curves overlay, the table fills in, and the Compare tab shows both runs beside the baseline."""
    expect = playwright_api.expect
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(app[1])
    page.get_by_role("tab", name="3 · Train").click()
    methods = page.locator("#comparison-methods")
    for name in ("IPO", "KTO"):
        methods.get_by_label(name, exact=True).uncheck()
    expect(methods.get_by_label("DPO", exact=True)).to_be_checked()
    expect(methods.get_by_label("ORPO", exact=True)).to_be_checked()
    steps_box = page.get_by_label("Steps per run")
    steps_box.fill("3")
    steps_box.press("Tab")
    page.get_by_role("button", name="Compare methods", exact=True).click()
    status = page.locator("#comparison-status")
    expect(status).to_contain_text("Run 1 of 2: DPO", timeout=120_000)  # no baseline yet: it is recorded first
    expect(status).to_contain_text("Comparison finished: 2 of 2 runs", timeout=300_000)

    table = page.locator("#comparison-table")
    for text in ("A", "DPO", "B", "ORPO", "held-out acc", "verdict"):
        expect(table).to_contain_text(text)
    overlay = page.locator("#plot-overlay")
    expect(overlay).to_contain_text("A · DPO")  # the legend: one curve per run
    expect(overlay).to_contain_text("B · ORPO")
    page.locator("#comparison-axis").get_by_label("held-out accuracy").check()
    expect(overlay).to_contain_text("B · ORPO")
    page.get_by_text("The map of methods").click()  # folded by default
    expect(page.locator("#method-map")).to_contain_text("DPO (run A)")
    expect(page.locator("#method-map")).to_contain_text("ORPO (run B)")
    page.screenshot(path=str(output_dir / "browser-5-comparison.png"), full_page=True)

    page.get_by_role("tab", name="4 · Compare").click()
    expect(page.locator("#compare-summary")).to_contain_text("answers changed")  # the last run's own comparison
    runs_table = page.locator("#runs-table")
    expect(runs_table).to_contain_text("ORPO")
    answers = page.locator("#runs-answers")
    for text in ("Baseline", "A · DPO", "B · ORPO", "What is 12 times 12?"):
        expect(answers).to_contain_text(text)
    page.screenshot(path=str(output_dir / "browser-6-runs-side-by-side.png"), full_page=True)
    page.close()


def test_a_failed_run_and_its_remedy_side_by_side(app, browser, output_dir: Path) -> None:
    """A run with far too large a step fails; its verdict names a remedy, and *Try the remedy* trains it beside
    the first run: a second row in the runs side by side and a second curve in the overlay."""
    expect = playwright_api.expect
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.set_default_timeout(60_000)
    page.goto(app[1])
    page.get_by_role("tab", name="2 · Dataset").click()
    page.locator("#preset-picker input").click()
    page.get_by_role("option", name="seed-lab").click()
    expect(page.locator("#preset-description")).to_contain_text("Helpful and polite")
    page.get_by_role("tab", name="1 · Baseline").click()
    page.get_by_role("button", name="Load model and record answers").click()
    expect(page.locator("#baseline-status")).to_contain_text("Recorded 7 answers")
    page.get_by_role("tab", name="3 · Train").click()
    for label, value in (("Learning rate", "0.001"), ("β (beta)", "0.01"), ("Steps", str(REMEDY_STEPS))):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(page.locator("#train-status")).to_contain_text(f"Finished {REMEDY_STEPS} of", timeout=240_000)
    page.get_by_role("tab", name="4 · Compare").click()
    page.get_by_role("button", name="Compare before and after").click()
    health = page.locator("#compare-health")
    expect(health).to_contain_text("Health verdict: FAILED", timeout=120_000)
    expect(health).to_contain_text("Remedy:")
    expect(health).to_contain_text("learning_rate")
    page.get_by_role("button", name="Try the remedy").click()
    expect(page.locator("#remedy-status")).to_contain_text("Remedy tried", timeout=300_000)
    runs_table = page.locator("#runs-table")
    expect(runs_table).to_contain_text("A")
    expect(runs_table).to_contain_text("B")
    expect(page.locator("#runs-answers")).to_contain_text("B · DPO")
    expect(page.locator("#plot-overlay")).to_contain_text("B · DPO")
    page.screenshot(path=str(output_dir / "browser-7-remedy.png"), full_page=True)
    page.close()
