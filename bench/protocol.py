"""How the bench hands a measurement to a fresh process and reads its result back.

The parent runs ``python -m bench.worker MODE SPEC [JSON]`` (:func:`run_worker`); the worker measures and
prints one line, ``BENCH-RESULT {json}`` (:func:`write_result`), last on its stdout; the parent takes the last
such line (:func:`read_result`). A fresh process is what a cold start is, and the only honest way to read a
peak-memory figure: a process's resident-set high-water mark never comes down. Nothing here imports a section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MARKER = "BENCH-RESULT "
#: The checkout the bench runs from: a worker's working directory.
ROOT = Path(__file__).resolve().parent.parent


def write_result(result: dict[str, Any]) -> None:
    """The worker's last word: its result as one marked line on stdout."""
    print(MARKER + json.dumps(result), flush=True)


def read_result(stdout: str) -> dict[str, Any] | None:
    """The result in a worker's stdout (its last marked line), or None when it wrote none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    return None


def child_env(device: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, with ``env`` on top; ``device='cpu'`` hides any GPU from it."""
    out = dict(os.environ)
    out.update(env or {})
    if device == "cpu":
        out["CUDA_VISIBLE_DEVICES"] = ""  # the lab picks CUDA whenever it sees one
    return out


def failure(what: str, proc: subprocess.CompletedProcess) -> RuntimeError:
    """The error for a child that gave no result: its exit status and the tail of its output."""
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
    return RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def run_worker(
    mode: str, spec: str, device: str | None, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -m bench.worker MODE SPEC *extra`` in a fresh process and return its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", mode, spec, *extra],
        cwd=ROOT,
        env=child_env(device, env),
        capture_output=True,
        text=True,
        check=False,
    )
    result = read_result(proc.stdout)
    if result is None:
        raise failure(f"bench.worker {mode}", proc)
    return result
