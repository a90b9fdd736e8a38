"""The app: a header, the four tabs, the presenter's "Run the whole lab" button, and the wiring.

Each tab lives in its own module (layout + handlers); this file joins them, adds the events that
cross tabs (Stop, the whole-lab chain, session clean-up) and the public ``/run_lab`` endpoint.
No ``from __future__ import annotations`` here: ``gr.api`` reads the real type hints of
:func:`run_lab` to type the endpoint.
"""

import os
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.data.pairs import DatasetError
from alignlab.data.presets import Preset, list_presets, load_preset
from alignlab.registry.methods import DEFAULT_METHOD
from alignlab.registry.settings import GENERATION_KNOBS, KNOBS, GenerationSettings, TrainingSettings
from alignlab.serving import addresses, model_checks, owners
from alignlab.serving.public import public_mode
from alignlab.ui import baseline_tab, compare_tab, comparison_panel, dataset_tab, runs_panel, service, train_tab, work
from alignlab.ui.common import STORE, api_doc, close_session, default_model, session_of, visitor_of
from alignlab.ui.inputs import GREEDY, generation_settings, settings_from_values

DEFAULTS = TrainingSettings()
MAX_NEW_TOKENS = GenerationSettings().max_new_tokens

HEADER = (
    "# AlignLab\n"
    "Watch preference training (**DPO**, and IPO, KTO, ORPO, SimPO, RLHF beside it) change a small language model, "
    "live. Record its answers, write pairs of better and worse answers, train, then see what changed — and what "
    "it cost."
)


def public_notice() -> str:
    """What a public Space allows and refuses, in a line under the header (empty on a private server)."""
    if not public_mode():
        return ""
    limit, described = model_checks.machine_memory()
    per_address = work.max_per_address()
    return (
        "**Public Space: everyone here shares one machine.** Models come from the list or the Hub (a model whose "
        f"training needs more than {limit / 2**30:.0f} GiB, {described}, is refused with its size; local paths "
        f"are refused). Each visitor may have {work.MAX_WAITING_PER_SESSION} requests waiting for the model "
        f"({per_address} per network address, or per account for a visitor who is logged in); identical runs are "
        "shared. Your files are deleted when you close the tab, after two idle hours, or when the disk needs the room "
        "(you are told)."
    )


def visitor_notice(request: gr.Request) -> str:
    """The public notice as this visitor reads it: who their share of the line is counted for (their account where
    they are logged in, else their network address)."""
    notice = public_notice()
    if not notice:
        return ""
    return f"{notice} Here, requests are counted for {visitor_of(request).text()}."


CSS = """
.gradio-container { font-size: 1.15rem; max-width: 1400px !important; }
.al-intro p { font-size: 1.2rem; line-height: 1.5; }
#header h1, #header p { overflow-wrap: normal; word-break: normal; }
#train-status p, #compare-summary h2 { font-size: 1.35rem; }
#comparison-run-row { align-items: end; }
#comparison-run-row > button { flex-grow: 1; max-height: 3.2rem; }
[role="tab"][aria-selected="true"] { font-weight: 700; background: var(--color-accent-soft); }
table.al-compare { width: 100%; border-collapse: collapse; font-size: 1.1rem; }
table.al-compare th { text-align: left; padding: 6px; border-bottom: 2px solid #888; width: 50%; }
table.al-compare td { vertical-align: top; padding: 6px 8px; }
td.al-prompt { font-weight: 600; padding-top: 16px !important; border-top: 1px solid #ccc; }
del.al-del { background: #fdd; color: #900; text-decoration: line-through; }
ins.al-ins { background: #dfd; color: #060; text-decoration: none; font-weight: 600; }
.al-badge { font-size: 0.85rem; padding: 1px 8px; border-radius: 10px; margin-left: 8px; font-weight: 500; }
.al-changed { background: #2563eb; color: white; }
.al-same { background: #ddd; color: #333; }
@media (max-width: 720px) {
  .gradio-container { font-size: 1rem; padding-left: 8px !important; padding-right: 8px !important; }
  .al-intro p, #header p { font-size: 1rem; line-height: 1.45; }
  #header-row { flex-direction: column; align-items: stretch; }
  #header-row > * { min-width: 0 !important; width: 100%; }
  #run-lab-button { flex: none !important; min-height: 0; }
  [role="tab"] { padding: 0 10px !important; }
  table.al-compare thead { display: none; }
  table.al-compare tr, table.al-compare td { display: block; width: auto !important; }
  table.al-compare td[data-label]::before {
    content: attr(data-label); display: block; font-size: 0.85rem; font-weight: 600; color: #555;
  }
  table.al-compare td { border: none !important; }
  .prose table { display: block; overflow-x: auto; max-width: 100%; }
  .prose th, .prose td { overflow-wrap: normal; word-break: normal; min-width: 4.5em; }
}
"""


def launch_options() -> dict[str, Any]:
    """Arguments for ``demo.launch``: in Gradio 6 the theme and CSS go here, not to ``Blocks``."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", text_size=gr.themes.sizes.text_lg),
        "css": CSS,
        "footer_links": ["api", "gradio"],
        "max_file_size": "20mb",  # the importer's own limit; larger uploads are refused before they land
        # Every request waiting for the model holds a worker while it waits in work.LINE; keep room
        # beyond a full line so that checks and wrong clicks are always answered at once.
        "max_threads": work.QUEUE_SIZE + 40,
    }


def run_lab(
    model: str = "",
    preset: str = dataset_tab.DEFAULT_PRESET,
    steps: int | None = None,
    beta: float | None = None,
    learning_rate: float | None = None,
    batch_size: int = DEFAULTS.batch_size,
    loss_type: str = DEFAULTS.loss_type,
    seed: int = DEFAULTS.seed,
    max_new_tokens: int = MAX_NEW_TOKENS,
    method: str = DEFAULT_METHOD,
    sft_weight: float | None = None,
    judge: str = "",
    request: gr.Request = None,
) -> dict:
    """Run the whole lab on a preset: baseline, train, compare. Returns the report JSON.

    Args:
        model: model spec (a listed name, a Hub id or a local path); empty means the app's default model.
        preset: preset id.
        max_new_tokens: For the eval prompts.
        method: The report's settings.training.method.
        judge: who judges the win rate: empty (the data), "lab_reward_model", or a reward model's Hub id or folder.
    Returns:
        The report: model, settings, baseline_outputs, aligned_outputs, changed, log_history, health (with its
        remedy), eval (with the judge and the win rate), timings.
    """
    try:
        lab = load_preset(preset)
    except DatasetError as exc:
        raise gr.Error(str(exc), title="Unknown preset") from exc
    # Every check before any model work, so that a wrong input is answered at once.
    settings = settings_from_values(
        {
            "method": method,
            "beta": beta,
            "learning_rate": learning_rate,
            "steps": steps,
            "batch_size": batch_size,
            "loss_type": loss_type,
            "seed": seed,
            "sft_weight": sft_weight,
        }
    )
    generation = generation_settings(max_new_tokens, GREEDY, 0)
    session = session_of(request)
    service.choose_judge(session, judge)
    return service.run_lab(session, model or default_model(), lab, settings, generation)


def run_lab_doc() -> str:
    """/run_lab's description: its settings from their fields, its presets those found."""
    knobs = {**KNOBS, "max_new_tokens": GENERATION_KNOBS["max_new_tokens"]}
    return api_doc(run_lab, knobs, choices={"preset": [p.id for p in list_presets()]})


def prepare_lab(preset_id: str, request: gr.Request) -> tuple[Any, ...]:
    """The presenter chain's first link: load the chosen preset into every tab, show the Baseline tab.

    The lab's later steps keep this click's place in line (see ``work.start_lab``).
    """
    filled = dataset_tab.load_preset_ui(preset_id)
    work.start_lab(session_of(request), default_model(), load_preset(preset_id), DEFAULTS, MAX_NEW_TOKENS)
    return (*filled, gr.Tabs(selected="baseline"))


def show_tab(name: str) -> Any:
    def select() -> Any:
        return gr.Tabs(selected=name)

    return select


def default_preset() -> Preset:
    """The preset the app opens on (``ALIGNLAB_DEFAULT_PRESET`` overrides, e.g. in tests)."""
    return load_preset(os.environ.get("ALIGNLAB_DEFAULT_PRESET", dataset_tab.DEFAULT_PRESET))


def show_runs_after(event: Any, comparison: SimpleNamespace) -> None:
    """A finished run joins the overlay and the map, whichever button trained it."""
    event.then(runs_panel.overlay_ui, comparison.axis, comparison.overlay, api_visibility="private", queue=False).then(
        runs_panel.map_ui, None, comparison.map, api_visibility="private", queue=False
    )


def _wire_presenter_chain(
    run_all: gr.Button,
    tabs: gr.Tabs,
    baseline: SimpleNamespace,
    dataset: SimpleNamespace,
    train: SimpleNamespace,
    compare: SimpleNamespace,
    comparison: SimpleNamespace,
) -> Any:
    """Presenter mode: the same handlers as the tabs, chained, each tab shown as its step runs; returns the
    training event (for Stop).

    Model work waits in ``work.LINE``, not in Gradio's queue: each step's checks answer at once.
    """
    heavy = {"concurrency_limit": None, "api_visibility": "private"}
    private = {"api_visibility": "private", "queue": False}
    lab_train = (
        run_all.click(
            prepare_lab,
            dataset.preset_id,
            [
                dataset.description,
                dataset.pairs,
                dataset.heldout,
                baseline.prompts,
                dataset.validation,
                *dataset_tab.probe_outputs(dataset),
                tabs,
            ],
            **private,
        )
        .success(baseline_tab.load_model_ui, baseline.model, baseline.model_status, **heavy)
        .success(
            baseline_tab.baseline_ui,
            [baseline.model, baseline.prompts, baseline.max_new_tokens, baseline.decoding, baseline.seed],
            [baseline.outputs, baseline.status],
            **heavy,
        )
        .success(show_tab("train"), None, tabs, **private)
        .success(train_tab.train_ui, outputs=train_tab.outputs(train), **train_tab.inputs(train, dataset), **heavy)
    )
    show_runs_after(lab_train, comparison)
    lab_train.success(show_tab("compare"), None, tabs, **private).success(
        compare_tab.compare_ui, [compare.judge], compare_tab.outputs(compare), **heavy
    ).success(compare_tab.show_runs_ui, None, compare_tab.runs_outputs(compare), **private)
    return lab_train


def build_app() -> gr.Blocks:
    """The whole app, queued. Launch it with ``demo.launch(**launch_options())``."""
    work.setup()
    addresses.keep_the_peer()  # before the server starts: the visitor's address is read by the lab alone
    owners.sweep(STORE.root, unclaimed_after=STORE.ttl)  # folders left by servers that are gone; live ones' stay
    preset = default_preset()
    # delete_cache: Gradio's copies of downloads (reports, exports) older than 2 h, checked hourly.
    with gr.Blocks(title="AlignLab — see DPO change a model", delete_cache=(3600, 7200)) as demo:
        with gr.Row(equal_height=True, elem_id="header-row"):
            gr.Markdown(HEADER, elem_id="header")
            run_all = gr.Button(
                "Run the whole lab", variant="secondary", scale=0, min_width=260, elem_id="run-lab-button"
            )
        notice = gr.Markdown(public_notice(), elem_id="public-notice") if public_mode() else None
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # on a phone the steps wrap, none hidden in a menu
            with gr.Tab("1 · Baseline", id="baseline"):
                baseline = baseline_tab.build(preset.eval_prompts)
            with gr.Tab("2 · Dataset", id="dataset"):
                dataset = dataset_tab.build(preset)
            with gr.Tab("3 · Train", id="train"):
                train, controls = train_tab.build(beside=comparison_panel.build_controls)
                comparison = comparison_panel.build(controls)
            with gr.Tab("4 · Compare", id="compare"):
                compare = compare_tab.build()

        baseline_tab.wire(baseline)
        dataset_tab.wire(dataset, baseline.prompts)
        train_event = train_tab.wire(train, dataset)
        compare_tab.wire(compare)
        comparison_event, remedy_event = comparison_panel.wire(
            comparison,
            train,
            dataset,
            baseline,
            train_tab.outputs(train),
            [*compare_tab.runs_outputs(compare), *compare_tab.outputs(compare)],
            compare.remedy,
            compare.remedy_status,
        )

        show_runs_after(train_event, comparison)
        lab_train = _wire_presenter_chain(run_all, tabs, baseline, dataset, train, compare, comparison)

        # Stop: cancel this session's streaming event, and tell its training thread to stop now.
        train.stop.click(None, None, None, cancels=[train_event, lab_train, comparison_event, remedy_event])
        train.stop.click(
            train_tab.stop_ui,
            None,
            train_tab.outputs(train),
            api_name="stop",
            api_description=api_doc(train_tab.stop_ui),
            concurrency_limit=None,
        )

        gr.api(run_lab, api_name="run_lab", api_description=run_lab_doc(), concurrency_limit=None)
        if notice is not None:
            demo.load(visitor_notice, None, notice, api_visibility="private", queue=False)
        demo.unload(close_session)
    demo.queue(default_concurrency_limit=None, max_size=work.QUEUE_SIZE)
    demo.session_store = STORE  # for tests and operators: who is here, and clean-up
    demo.shared = work.SHARED  # the shared runs and their cache (bounds, counts)
    demo.line = work.LINE  # the line for model work
    return demo
