"""Whether this server is a public Space, where every visitor shares one machine.

Public mode is on when the app runs on a Hugging Face Space (the Space sets ``SPACE_ID``) or with
``ALIGNLAB_PUBLIC=1``, and off with ``ALIGNLAB_PUBLIC=0`` (an owner's private Space) and for a local ``make demo``.
What it changes is decided where it matters (tracking, for one); this module only answers the question.
"""

from __future__ import annotations

import os


def public_mode() -> bool:
    setting = os.environ.get("ALIGNLAB_PUBLIC", "").strip()
    if setting in {"0", "1"}:
        return setting == "1"
    return bool(os.environ.get("SPACE_ID"))
