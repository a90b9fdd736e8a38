"""The sessions' model work: one fair line for all of it, and identical work computed once.

Every handler that touches a model does its own checks first (answered at once, however long the
line) and then comes here. Each piece of model work is shared work (:mod:`alignlab.serving.sharing`) keyed
by everything its result depends on; new work takes a ticket in the process-wide line
(:mod:`alignlab.serving.line`), so at most ``ALIGNLAB_CONCURRENCY`` pieces run at once, in arrival order,
whichever path they come from (the tabs, the presenter's chain, ``/run_lab``, the API steps). A
request identical to one in flight joins it; one identical to a finished run is served from the
cache; either way the session gets its own copy of the result and its own hard-linked policy files.

While a request waits, its place in line and an estimated wait (from measured step times) are
shown through ``gr.Progress`` — the overlay in the UI, ``job.status().progress_data`` for an API
client — and, for the streaming ``/train``, in its status line too.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import copy
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from alignlab.data.pairs import pairs_to_dicts, thumbs_to_dicts
from alignlab.data.presets import Preset
from alignlab.data.question_set import MAX_NEW_TOKENS, builtin_questions
from alignlab.models.loading import ModelLoadError, is_loaded, load_model, pick_device, spec_identity
from alignlab.pipeline.steps import model_info
from alignlab.registry.settings import GenerationSettings, TrainingSettings
from alignlab.serving import downloads, gpu, model_checks
from alignlab.serving.line import Line, LineFull, Place, Work, configure_torch_threads, ordinal
from alignlab.serving.owners import claim
from alignlab.serving.public import public_mode
from alignlab.serving.sharing import Finished, Member, Published, SharedWork, SharedWorks, Waiting, link_tree, work_key
from alignlab.ui import jobs
from alignlab.ui.common import LINE_LIMIT, STORE, fail
from alignlab.ui.state import AcceptedRequest, LabPlan, Session, TrainedRun, TrainingHandle

_MAX_NEW_TOKENS = GenerationSettings().max_new_tokens
#: How many requests may wait for the model at once (beyond that, "the lab is full").
QUEUE_SIZE = int(os.environ.get("ALIGNLAB_QUEUE_SIZE", "64"))

LINE = Line(limit=LINE_LIMIT, max_waiting=QUEUE_SIZE)
SHARED = SharedWorks(
    LINE,
    root=lambda: STORE.root / "_shared",  # beside the session folders: same file system, so links work
    max_entries=int(os.environ.get("ALIGNLAB_RUN_CACHE", "32")),
    max_memory_bytes=int(float(os.environ.get("ALIGNLAB_RUN_CACHE_MB", "64")) * 2**20),
    max_disk_bytes=int(float(os.environ.get("ALIGNLAB_RUN_CACHE_DISK_MB", "4096")) * 2**20),
)

#: Downloads from the Hub: a line of their own, one at a time, so that a download never holds up model work.
DOWNLOAD_LINE = Line(limit=1, max_waiting=QUEUE_SIZE)
DOWNLOADS = SharedWorks(DOWNLOAD_LINE, root=lambda: STORE.root / "_shared", max_entries=0)

atexit.register(SHARED.clear)  # cached policies live under the sessions' root, which outlives the app

#: A late joiner sees the steps already run redrawn one by one, in about this long at most.
REPLAY_SECONDS = 3.0
#: Off while nobody watches the curves (``/run_lab`` returns only the report): no pauses then.
_PACED_REPLAY: contextvars.ContextVar[bool] = contextvars.ContextVar("paced_replay", default=True)
#: A lab's plan is forgotten when no step of it has ended or begun for this long (a chain that
#: stopped on a wrong input says nothing; its next click is a new arrival).
LAB_IDLE_SECONDS = 30.0


def setup() -> None:
    """Once per app: torch threads sized so that the allowed runs do not oversubscribe the cores."""
    configure_torch_threads(LINE_LIMIT)


# --------------------------------------------------------------------------- checks and keys


def check_model(spec: Any) -> tuple[str, str]:
    """A model spec checked without fetching or loading its weights: (spec, identity). Raises ``gr.Error``.

    Where it may come from, what it is and whether the lab's training fits this machine
    (:mod:`alignlab.serving.model_checks`).
    """
    spec = spec.strip() if isinstance(spec, str) else ""
    if not spec:
        raise fail("Pick a model from the list, or type a Hub id or a local path.", "No model")
    if len(spec) > 500:
        raise fail("That model name is too long to be a Hub id or a path.", "Bad model name")
    try:
        model_checks.check_source(spec)
        identity = spec_identity(spec)
        model_checks.check(spec)
        return spec, identity
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc


def model_fingerprint(identity: str) -> dict[str, Any]:
    """A model's identity, plus the names, sizes and times of its files when it is a local folder."""
    path = Path(identity)
    if not path.is_dir():
        return {"source": identity}
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return {"source": identity, "files": files}


def _scale(spec: str) -> float:
    """Cost of a model relative to the embedded 135M one on the CPU (for estimates before any measurement)."""
    scale = max(0.05, gpu.estimate_parameters(spec) / 135_000_000)
    return scale * (0.05 if pick_device().type == "cuda" else 1.0)


def generation_units(n_prompts: int, max_new_tokens: int) -> float:
    return math.ceil(max(1, n_prompts) / 16) * max_new_tokens


def _plan(session: Session, kind: str) -> tuple[float | None, float, bool]:
    """(arrival, seconds of the lab's later steps, whether a step follows) for a step of ``kind``."""
    lab = session.lab
    if lab is None:
        return None, 0.0, False
    if time.monotonic() - lab.touched > LAB_IDLE_SECONDS:
        end_lab(session)
        return None, 0.0, False
    lab.touched = time.monotonic()
    return lab.arrival, lab.follow_on.get(kind, 0.0), kind != "compare"


def touch_lab(session: Session) -> None:
    """A step of the lab ended: the next one keeps the lab's place."""
    if session.lab is not None:
        session.lab.touched = time.monotonic()


def start_lab(session: Session, spec: str, lab: Preset, settings: TrainingSettings, max_new_tokens: int) -> None:
    """A whole lab begins (``/run_lab``, or the page's *Run the whole lab*): it is checked against the visitor's and
    the address's share now, before its first step (:func:`accept`; refused: ``gr.Error``), and counts as one
    request, keyed by everything its result depends on, until its comparison starts; its steps keep this arrival,
    and each carries the cost of the steps after it."""
    end_lab(session)
    try:
        identity = spec_identity(spec)
    except ModelLoadError:
        identity = spec
    key = work_key("lab", model=identity, lab=lab.to_dict(), settings=settings, max_new_tokens=max_new_tokens)
    request = accept(session, "a whole lab", key)
    rates, scale = LINE.rates, _scale(spec)
    gen = generation_units(len(lab.eval_prompts), max_new_tokens)
    train = rates.seconds(Work("train", identity, settings.total_steps(len(lab.pairs)) * settings.batch_size, scale))
    compare = rates.seconds(Work("compare", identity, gen + 8 * len(lab.heldout_pairs), scale))
    baseline = rates.seconds(Work("baseline", identity, gen, scale))
    now = time.monotonic()
    session.lab = LabPlan(
        arrival=now,
        touched=now,
        follow_on={"load": baseline + train + compare, "baseline": train + compare, "train": compare, "compare": 0.0},
        request=request,
    )


def end_lab(session: Session) -> None:
    """The lab is over (finished, failed or stopped): its held place goes to the next in line, and it no longer
    counts in the share of the line."""
    lab, session.lab = session.lab, None
    if lab is not None:
        LINE.release_hold(lab.arrival)
        release(session, lab.request)


# --------------------------------------------------------------------------- joining and following


def waiting_text(place: Place | None) -> str:
    if place is None:
        return "Starting: the model is free."
    return f"Waiting for the model: {place.text()}."


def join(session: Session, key: str, work: Work, produce: Any) -> Member:
    """Join (or start) the shared run for ``key``; a full line, or a full share of it, is a clear message, not a
    wait. A step of an accepted request of several steps (:func:`one_request`) was admitted with its request."""
    arrival, follow_on, continues = _plan(session, work.kind)
    request = _REQUEST.get() or (session.lab.request if session.lab is not None else None)
    with _ADMISSION:  # the check and the place it grants, at once: simultaneous requests see each other
        if request is None:
            admit(session, key)
        elif work.kind == "compare":
            request.comparisons -= 1  # its last comparison is its last step
        try:
            member = SHARED.join(key, work, produce, arrival=arrival, follow_on=follow_on, continues=continues)
        except LineFull as exc:
            end_lab(session)
            raise gr.Error(str(exc), title="The lab is full") from exc
        if request is not None:
            request.steps.add(key)
            request.member = member
        session.members = [m for m in session.members if not m.left] + [member]
    return member


# --------------------------------------------------------------------------- a fair share of the line

#: Heavy requests one visitor (a browser tab, or one client's session) may have waiting at once.
MAX_WAITING_PER_SESSION = 2
#: The request of several steps the current step belongs to (set inside :func:`one_request`).
_REQUEST: contextvars.ContextVar[AcceptedRequest | None] = contextvars.ContextVar("request", default=None)
#: Held while a request is checked and takes its place, so that requests arriving at once are counted one by one.
_ADMISSION = threading.RLock()
_WHAT = {
    "load": "loading a model",
    "baseline": "answers before training",
    "train": "a training run",
    "compare": "a comparison of before and after",
}


@contextlib.contextmanager
def one_request(session: Session, what: str, key: str, comparisons: int = 1) -> Iterator[AcceptedRequest]:
    """Several steps in a row that are one request (a comparison of methods; ``key``: everything its result depends
    on): checked before its first step against everything the visitor and their address already have waiting
    (:func:`admit`), then counted as one request whatever step it is on, until its last step, the last of its
    ``comparisons``, starts. Its steps are never refused for the share. An identical request already accepted
    (``key``) adds no work: it is admitted free. A whole lab is such a request too, begun by :func:`start_lab`."""
    request = accept(session, what, key, comparisons)
    token = _REQUEST.set(request)
    try:
        yield request
    finally:
        _REQUEST.reset(token)
        release(session, request)


def as_one_request(session: Session, what: str, key: str, comparisons: int, steps: Iterator[Any]) -> Iterator[Any]:
    """:func:`one_request` for a streaming handler: ``steps`` (a generator whose steps join the line) iterated as one
    request. Gradio may resume a generator in another thread's context, so the request is set around each step."""
    request = accept(session, what, key, comparisons)
    try:
        while True:
            token = _REQUEST.set(request)
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                _REQUEST.reset(token)
            yield item
    finally:
        steps.close()
        release(session, request)


def accept(session: Session, what: str, key: str, comparisons: int = 1) -> AcceptedRequest:
    """Check a request of several steps, ending with ``comparisons`` comparisons, against the share of the line
    (:func:`admit`) and count it from now on; one identical to a request already accepted is free. Raises
    ``gr.Error`` when refused."""
    with _ADMISSION:
        free = any(r.key == key and not r.final and not r.free for other in _sessions(session) for r in other.accepted)
        if not free:
            admit(session, key)
        request = AcceptedRequest(what, key, comparisons=comparisons, free=free)
        session.accepted.append(request)
    return request


def release(session: Session, request: AcceptedRequest | None) -> None:
    """The request has ended: it no longer counts."""
    if request is None:
        return
    with _ADMISSION:
        session.accepted = [r for r in session.accepted if r is not request]


def max_per_address() -> int | None:
    """In public mode, waiting requests one network address may hold (``ALIGNLAB_MAX_PER_ADDRESS``, default 16: a
    workshop room behind one router); None (no bound) otherwise."""
    if not public_mode():
        return None
    try:
        return max(1, int(os.environ.get("ALIGNLAB_MAX_PER_ADDRESS", "16")))
    except ValueError:
        return 16


def _sessions(session: Session) -> list[Session]:
    """Every live session, ``session`` among them (a session the store no longer holds still counts its own)."""
    others = list(STORE.sessions().values())
    return others if any(other is session for other in others) else [*others, session]


def waiting(session: Session) -> dict[str, str]:
    """What the session has waiting for the model, one entry per piece of work (identical work counts once), each
    described as a refusal lists it: its accepted requests of several steps that have not reached their last step,
    and its other requests still waiting for the line."""
    found: dict[str, str] = {}
    counted: set[str] = set()
    for request in session.accepted:
        if request.free or request.final:
            continue
        counted |= request.steps
        found.setdefault(request.key, _request_text(request))
    for member in session.members:
        if not member.left and member.run.state == "waiting" and member.run.key not in counted:
            found.setdefault(member.run.key, _step_text(member))
    return found


def _step_text(member: Member) -> str:
    place = LINE.place(member.run.ticket) if member.run.ticket is not None else None
    where = f"{ordinal(place.position)} in line" if place is not None else "about to start"
    return f"{_WHAT.get(member.run.kind, member.run.kind)} ({where})"


def _request_text(request: AcceptedRequest) -> str:
    member = request.member
    if member is None or member.left:
        return f"{request.what} (accepted, about to start)"
    state = "waits" if member.run.state == "waiting" else "runs"
    return f"{request.what} (its {_WHAT.get(member.run.kind, member.run.kind)} {state})"


def admit(session: Session, key: str) -> None:
    """Refuse, at once, a request that would add work beyond the visitor's share of the line, or (in public mode)
    beyond their address's: what is already waiting for them is listed, and nothing already accepted is touched.

    Joining an identical run (in flight or finished) adds no work and is always admitted.
    """
    if SHARED.has(key):
        return
    mine = waiting(session)
    if key in mine:
        return
    if len(mine) >= MAX_WAITING_PER_SESSION:
        raise fail(
            f"You already have {len(mine)} requests waiting for the model: {_listed(mine)}. The next one is taken "
            "once one of them starts (or stop one): this keeps the line fair for everyone on this machine.",
            "Your share of the line",
        )
    limit = max_per_address()
    if limit is None or not session.address:
        return
    theirs: dict[str, str] = {}
    for other in _sessions(session):
        if other.address == session.address:
            theirs.update(waiting(other))
    if key not in theirs and len(theirs) >= limit:
        raise fail(
            f"{session.counted_as[0].upper()}{session.counted_as[1:]} already has {len(theirs)} requests waiting for "
            f"the model (at most {limit} on this public Space): {_listed(theirs)}. Try again once some of them "
            "have started; a run identical to one of them is shared, and always taken.",
            "Your share of the line",
        )


def _listed(waiting: dict[str, str], limit: int = 6) -> str:
    items = list(waiting.values())
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def show_place(update: Waiting, progress: gr.Progress | None) -> None:
    """A waiting note as a progress update: the UI's overlay, and ``progress_data`` for API clients."""
    if progress is None:
        return
    place = update.place
    if place is None:
        progress(None, desc=waiting_text(place))
    else:
        progress((place.position, place.waiting), desc=waiting_text(place), unit="in line")


def raise_failure(finished: Finished) -> None:
    """A failed run's error, raised in this member's thread (a fresh ``gr.Error`` for each member)."""
    error = finished.error
    if isinstance(error, gr.Error):
        raise gr.Error(error.message, title=error.title) from error
    if finished.cancelled:
        raise fail("The run was stopped before it started.", "Stopped")
    raise gr.Error(f"The model work failed: {error}", title="Failed") from error


def follow(session: Session, member: Member, progress: gr.Progress | None = None) -> Any:
    """Wait for a non-streaming run, showing the place in line; returns the result (shared: copy it)."""
    try:
        for update in member.updates():
            if isinstance(update, Waiting):
                if STORE.peek(session.key) is not session:  # the tab was closed while it waited
                    raise fail("This session has ended.", "Session closed")
                show_place(update, progress)
            elif isinstance(update, Finished):
                if update.error is not None or update.cancelled or update.result is None:
                    raise_failure(update)
                return update.result
        raise fail("The run was stopped.", "Stopped")
    except BaseException:
        end_lab(session)
        raise
    finally:
        member.leave()
        touch_lab(session)


def how_text(member: Member) -> str:
    """One line on whether this request shares its run, for status lines."""
    others = member.others
    if member.how == "cached":
        return "An identical run (same model, data, settings and seed) already finished: here it is, replayed."
    if member.how == "joined":
        return f"Joined an identical run already in progress ({others + 1} visitors share it)."
    return ""


# --------------------------------------------------------------------------- the steps


def fetch(session: Session, spec: str, progress: gr.Progress | None = None) -> None:
    """Fetch a Hub model's files when this machine lacks them: in the download line, after a free-disk check."""
    try:
        facts = model_checks.inspect(spec)
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc
    if facts.download_bytes <= 0:
        return

    def produce(run: SharedWork) -> tuple[Any, bool]:
        def published(done: int, total: int) -> None:
            run.publish({"done": done, "total": total})

        try:
            return downloads.download(facts.source, facts.download_bytes, published), False
        except ModelLoadError as exc:
            raise gr.Error(str(exc), title="Model not fetched") from exc

    work = Work("download", facts.source, facts.download_bytes / 2**20)
    try:
        member = DOWNLOADS.join(work_key("download", model=facts.source), work, produce)
    except LineFull as exc:
        raise gr.Error(str(exc), title="The lab is full") from exc
    try:
        for update in member.updates():
            if isinstance(update, Waiting) and progress is not None:
                place = update.place
                where = f"{place.position} of {place.waiting} downloads waiting" if place else "starting"
                progress(None, desc=f"Waiting to fetch {facts.source} from the Hub: {where}.")
            elif isinstance(update, Published) and progress is not None:
                done, total = update.payload["done"], update.payload["total"]
                progress((done / 2**20, total / 2**20), desc=f"Fetching {facts.source} from the Hub", unit="MiB")
            elif isinstance(update, Finished):
                if update.error is not None or update.cancelled:
                    raise_failure(update)
                return
    finally:
        member.leave()


def load(session: Session, spec: str, identity: str, progress: gr.Progress | None = None) -> dict[str, Any]:
    """Load a model (a queued step only when it is not in memory yet); returns what the UI shows of it.

    A Hub model's files are fetched first (:func:`fetch`), outside the model line."""
    if not is_loaded(spec):
        fetch(session, spec, progress)

        def produce(run: SharedWork) -> tuple[Any, bool]:
            return model_info(_load(spec)), False  # loading leaves nothing to serve again

        member = join(session, work_key("load", model=identity), Work("load", identity, 1.0, _scale(spec)), produce)
        return follow(session, member, progress)
    return model_info(_load(spec))


def _load(spec: str) -> Any:
    try:
        return load_model(spec)
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc
    except Exception as exc:  # a directory or Hub repo that is not a causal LM, a broken config...
        raise gr.Error(f"'{spec}' could not be loaded as a language model: {exc}", title="Model not loaded") from exc


def baseline(
    session: Session,
    spec: str,
    identity: str,
    prompts: list[str],
    generation: dict[str, Any],
    progress: gr.Progress | None = None,
) -> dict[str, Any]:
    """The model's answers before training: :class:`alignlab.pipeline.steps.Baseline`'s plain form (a private copy), its
    seconds those of the whole step, the model's load included."""
    if not is_loaded(spec):
        fetch(session, spec, progress)
    key = work_key("baseline", model=model_fingerprint(identity), prompts=prompts, generation=generation)
    units = generation_units(len(prompts), generation["max_new_tokens"])

    def produce(run: SharedWork) -> tuple[Any, bool]:
        started = time.perf_counter()
        _load(spec)  # loaded in this process first: a forked ZeroGPU worker inherits it
        record = jobs.baseline_job(spec, prompts, generation)
        return {**record, "timings": {"baseline": time.perf_counter() - started}}, True

    member = join(session, key, Work("baseline", identity, units, _scale(spec)), produce)
    return copy.deepcopy(follow(session, member, progress))


def start_training(session: Session, spec: str, identity: str, lab: Preset, settings: TrainingSettings) -> Member:
    """Join (or start) the shared run of ``settings`` on the lab dataset ``lab``; its events are the training job's
    dicts.

    The held-out and contrast pairs are part of the run (its live held-out curve), so of its key;
    so are the thumbs rows trained on beside the pairs.
    """
    pair_dicts, settings_dict = pairs_to_dicts(lab.pairs), settings.to_dict()
    probe_dicts = (pairs_to_dicts(lab.heldout_pairs), pairs_to_dicts(lab.contrast_pairs))
    thumb_dicts = thumbs_to_dicts(lab.unpaired)
    thumbs = {"unpaired": thumb_dicts} if thumb_dicts else {}  # pairs alone keep their keys
    key = work_key(
        "train",
        model=model_fingerprint(identity),
        pairs=pair_dicts,
        heldout=probe_dicts[0],
        contrast=probe_dicts[1],
        settings=settings_dict,
        **thumbs,
    )
    units = settings.total_steps(len(lab.pairs) + len(lab.unpaired) // 2) * settings.batch_size
    capability = pairs_to_dicts(lab.capability_pairs)

    def produce(run: SharedWork) -> tuple[Any, bool]:
        token = TrainingHandle()  # the cancel token train_job looks up by id (a forked ZeroGPU worker gets a copy)
        run.on_cancel(token.cancel.cancel)
        policy_dir = str(claim(run.directory) / "policy")  # this server's: swept if it dies (alignlab.serving.owners)
        stream = jobs.train_job(
            spec, pair_dicts, settings_dict, policy_dir, token.id, *probe_dicts, thumb_dicts, capability
        )
        try:
            for event in stream:
                run.publish(event)
                if event["kind"] == "log" and run.ticket is not None:
                    LINE.report_progress(run.ticket, event["step"] / max(1, event["total_steps"]))
                elif event["kind"] != "log":
                    return event, not event["stopped_early"] and bool(event["policy_dir"])
                if run.cancelled and gpu.on_zero_gpu():  # the token cannot reach a forked worker
                    break
            return None, False
        finally:
            stream.close()
            token.finish()

    return join(session, key, Work("train", identity, units, _scale(spec)), produce)


def training_updates(member: Member) -> Iterator[Waiting | Published | Finished]:
    """The run's updates, each event this session's own copy."""
    for update in member.updates():
        if isinstance(update, Published):
            update = Published(copy.deepcopy(update.payload), update.index, update.replayed)
        yield update


def replay_frame(member: Member, index: int, redraw_seconds: float) -> bool:
    """Whether a replayed step is drawn, pausing before it, so that a late joiner sees the curves grow.

    Every step of a short run is drawn ``redraw_seconds`` apart; a long one is drawn in about
    ``REPLAY_SECONDS / redraw_seconds`` frames, so that the replay never takes long.
    """
    if redraw_seconds <= 0 or not _PACED_REPLAY.get():
        return True
    backlog = max(1, member.joined_at)
    stride = max(1, math.ceil(backlog / max(1, int(REPLAY_SECONDS / redraw_seconds))))
    if (index + 1) % stride and index + 1 < backlog:
        return False
    time.sleep(redraw_seconds)
    return True


@contextlib.contextmanager
def unpaced_replay() -> Iterator[None]:
    """Replays without pauses inside this block (a caller that shows no curves)."""
    token = _PACED_REPLAY.set(False)
    try:
        yield
    finally:
        _PACED_REPLAY.reset(token)


def adopt_policy(session: Session, trained: TrainedRun, member: Member, event: dict[str, Any]) -> None:
    """Keep in the session's run ``trained`` its own copy (hard links) of a finished run's policy, and the run it
    came from."""
    if not event.get("policy_dir"):
        trained.policy_dir, trained.key = None, None
        return
    trained.policy_dir = link_tree(event["policy_dir"], session.path("policy"))
    trained.key = f"{member.run.key}:{event['steps_done']}:{event['stopped_early']}"
    STORE.bound_disk(keep=session)


def compare(
    session: Session, preset: dict[str, Any], progress: gr.Progress | None = None, judge: str = ""
) -> dict[str, Any]:
    """The report for this session's trained policy (shared with identical sessions; a private copy); ``judge``:
    who judges the win rate (checked by the caller)."""
    baseline, trained = session.baseline, session.trained
    spec, identity = baseline.model_spec, spec_identity(baseline.model_spec)
    policy_dir, baseline_outputs = str(trained.policy_dir), list(baseline.outputs)
    generation, training = dict(baseline.generation), dict(trained.summary)
    timings = {**baseline.timings, "train": training["seconds"]}
    key = work_key(
        "compare",
        model=model_fingerprint(identity),
        training=trained.key or policy_dir,
        preset=preset,
        baseline=baseline_outputs,
        generation=generation,
        judge=judge,
    )
    units = generation_units(len(preset["eval_prompts"]), generation.get("max_new_tokens", _MAX_NEW_TOKENS))
    units += 8 * len(preset.get("heldout_pairs", []))
    units += generation_units(len(builtin_questions()) + len(preset.get("checked_questions") or []), MAX_NEW_TOKENS)
    units += generation_units(len(preset.get("heldout_pairs", [])), generation.get("max_new_tokens", _MAX_NEW_TOKENS))

    def produce(run: SharedWork) -> tuple[Any, bool]:
        pinned = link_tree(policy_dir, claim(run.directory) / "policy")  # the first session may close meanwhile
        try:
            report = jobs.compare_job(spec, str(pinned), preset, baseline_outputs, generation, training, timings, judge)
        finally:
            shutil.rmtree(run.directory, ignore_errors=True)
        return report, True

    member = join(session, key, Work("compare", identity, units, _scale(spec)), produce)
    return copy.deepcopy(follow(session, member, progress))
