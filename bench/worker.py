"""One measurement in a fresh process: ``python -m bench.worker MODE SPEC [JSON]`` (see :mod:`bench.protocol`).

Each mode is a function of the section it measures for, called with the model spec and the JSON options;
its result goes back to the parent as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.protocol import write_result

STARTED = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Mode = Callable[[str, dict[str, Any]], dict[str, Any]]


def modes() -> dict[str, Mode]:
    """Mode -> its measurement; the sections are imported here, after the environment above is set."""
    from bench import calibration, lab, methods, probe, room

    return {
        "lab": partial(lab.in_process, started=STARTED),
        "load": lab.load_in_process,
        "probe": probe.in_process,
        "calibrate": calibration.in_process,
        "room": room.in_process,
        "comparison": methods.comparison_in_process,
        "method_steps": methods.method_steps,
    }


def main(argv: list[str]) -> None:
    mode, spec = argv[0], argv[1]
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    from alignlab.training.memory import keep_freed_memory

    keep_freed_memory()  # what app.py and the CLI do first at start-up, before any thread starts
    from bench.common import quiet

    quiet()
    table = modes()
    if mode not in table:
        raise SystemExit(f"unknown mode {mode!r}: {', '.join(table)}")
    write_result(table[mode](spec, options))


if __name__ == "__main__":
    main(sys.argv[1:])
