"""What every tab shares: the session store, how much model work runs at once, errors and API docs."""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.registry.model_shapes import EMBEDDED_DEFAULT, LAB_MODELS
from alignlab.registry.settings import Knob, method_default_text, method_sets
from alignlab.serving import addresses, owners
from alignlab.ui.state import Session, SessionStore

#: Every user's session, keyed by Gradio's session hash (see state.py).
STORE = SessionStore(
    ttl=float(os.environ.get("ALIGNLAB_SESSION_TTL", 2 * 3600)),
    max_disk_bytes=int(float(os.environ.get("ALIGNLAB_DISK_MB", "20480")) * 2**20),
)
atexit.register(lambda: owners.remove_own(STORE.root))  # runs last: whatever this process still owns
atexit.register(STORE.close_all)

#: How many pieces of model work (load, generate, train, evaluate) run at once, whichever door they
#: come through; everyone else waits in ``runs.LINE`` and is shown their place in line.
LINE_LIMIT = int(os.environ.get("ALIGNLAB_CONCURRENCY", "1"))


def default_model() -> str:
    """The model preselected in the picker (``ALIGNLAB_DEFAULT_MODEL`` overrides, e.g. in tests)."""
    return os.environ.get("ALIGNLAB_DEFAULT_MODEL", "").strip() or EMBEDDED_DEFAULT


def model_choices() -> list[str]:
    choices = list(LAB_MODELS)
    if default_model() not in choices:
        choices.insert(0, default_model())
    return choices


def session_of(request: gr.Request | None) -> Session:
    """The request's session; who it is counted as noted (:func:`visitor_of`), and a notice it has not seen yet
    shown (a toast)."""
    session = STORE.get(getattr(request, "session_hash", None))
    visitor = visitor_of(request)
    if visitor.key:
        session.address, session.counted_as = visitor.key, visitor.text()
    if session.notice:
        notice, session.notice = session.notice, ""
        gr.Warning(notice)
    return session


def _account(request: gr.Request) -> str:
    """The logged-in visitor's name: Gradio's own login, else the Hugging Face login of a Space (OAuth)."""
    name = getattr(request, "username", None)
    if isinstance(name, str) and name:
        return name
    try:  # only where the Space's login is on (Gradio installs the session middleware then)
        info = request.request.session.get("oauth_info") if request.request is not None else None
    except (AssertionError, AttributeError):
        return ""
    user = (info or {}).get("userinfo") or {}
    return str(user.get("preferred_username") or "")


def visitor_of(request: gr.Request | None) -> addresses.Visitor:
    """Who a request is counted as in the fair share of the line: the logged-in account, else the network address
    the nearest trusted proxy saw (:mod:`alignlab.serving.addresses`)."""
    if request is None:
        return addresses.Visitor("address", "")
    account = _account(request)
    if account:
        return addresses.Visitor("account", account)
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if hasattr(headers, "get") else ""
    client = getattr(request, "client", None)
    peer = str(getattr(client, "host", "") or "")
    return addresses.Visitor("address", addresses.forwarded_address(forwarded, peer, addresses.trusted_proxies()))


def close_session(request: gr.Request) -> None:
    """``demo.unload``: the tab is gone; stop its run and delete its files."""
    STORE.close(getattr(request, "session_hash", None))


def fail(message: str, title: str = "Not yet") -> gr.Error:
    return gr.Error(message, title=title)


def problems_markdown(problems: list[str], limit: int = 8) -> str:
    shown = "\n".join(f"- {p}" for p in problems[:limit])
    more = f"\n- … and {len(problems) - limit} more." if len(problems) > limit else ""
    return shown + more


def api_doc(
    fn: Any,
    knobs: Mapping[str, Knob] | None = None,
    keywords: Sequence[str] = (),
    choices: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The endpoint description for the API page: the docstring's summary, each input and the result.

    Gradio shows only a handler's summary line; what each input does and takes matters to a script author as much
    as to a person reading the UI, so it goes into the description too. An input that is a setting (in ``knobs``)
    is described by its field (help, range or choices from the registry, each method's own default where methods
    set it), followed by the docstring's words for this endpoint if any; ``choices`` names the values another input
    takes (the presets found). The inputs come in the signature's order, ``**kwargs`` being the ``keywords`` the
    event passes by name (its ``inputs_kwargs``); an input the docstring does not describe, and no setting, is left
    out (a state, the request).
    """
    from gradio.utils import get_function_description

    names = _input_names(fn, keywords)
    summary, params, returns = get_function_description(_taking(fn, names))
    knobs, choices = knobs or {}, choices or {}
    lines = [summary.strip()]

    def described(name: str) -> str | None:
        text = params.get(name, "").strip()
        if name in knobs:
            own = f"empty: {method_default_text(name)}" if method_sets(name) else None
            text = " ".join(part for part in (knobs[name].doc(own, choices.get(name)), text) if part)
        elif name in choices:
            text = text.rstrip(".") + f" (one of {', '.join(choices[name])})."
        return f"{name} — {text}" if text else None

    inputs = [line for line in map(described, names) if line]
    if inputs:
        lines.append("Inputs: " + "; ".join(inputs))
    if returns:
        lines.append("Returns: " + " ".join(r.strip() for r in returns))
    return "\n".join(lines)


def _input_names(fn: Any, keywords: Sequence[str]) -> list[str]:
    """The names an endpoint's inputs fill: the handler's positional parameters, then ``keywords`` (its
    ``inputs_kwargs``, filling keyword-only parameters and ``**kwargs``); without keywords, every parameter."""
    parameters = inspect.signature(fn).parameters.values()
    if not keywords:
        return [p.name for p in parameters]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)] + list(keywords)


def _taking(fn: Any, names: list[str]) -> Any:
    """A stand-in for ``fn`` with its docstring and the parameters ``names``: gradio's docstring reader keeps the
    words of the parameters a signature has, and a handler's ``**kwargs`` has none by name."""

    def stand_in() -> None: ...

    stand_in.__doc__ = fn.__doc__
    stand_in.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names])
    return stand_in


def take_home_panel(title: str, what: str, placeholder: str, prefix: str, button: str) -> SimpleNamespace:
    """An accordion that saves something as a zip and pushes it to the Hub: a repo id, a token (used for one push
    and not kept), the button, what happened, and the zip. Element ids start with ``prefix``."""
    with gr.Accordion(title, open=False, elem_id=f"{prefix}-panel"):
        with gr.Row():
            repo_id = gr.Textbox(
                "", label=f"Hub {what} repo (optional)", placeholder=placeholder, elem_id=f"{prefix}-repo"
            )
            token = gr.Textbox(
                "",
                label="Hugging Face token (write access; used for this push only)",
                type="password",
                elem_id=f"{prefix}-token",
            )
        run = gr.Button(button, elem_id=f"{prefix}-button")
        status = gr.Markdown(elem_id=f"{prefix}-status")
        file = gr.File(label=f"{what} folder (zip)", interactive=False, elem_id=f"{prefix}-file")
    return SimpleNamespace(repo_id=repo_id, token=token, run=run, status=status, file=file)
