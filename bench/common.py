"""What every bench section shares: figures with their spread, the machine, models, peak memory.

A :class:`Figure` is a list of samples summarised as median and min-max (never a lone number), so
every value in the table and the JSON carries its spread and its sample count.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Model specs the bench builds itself (no hub needed); anything else goes to alignlab.models.loading.
BUILT_MODELS = ("tiny", "tiny-base", "gpt2-sized")
PRESET = "seed-lab"


@dataclass
class Figure:
    """Samples of one measured quantity; reported as median [min-max] (n)."""

    samples: list[float] = field(default_factory=list)
    unit: str = "s"

    def add(self, value: float) -> None:
        self.samples.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def low(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def high(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": _round(self.median),
            "min": _round(self.low),
            "max": _round(self.high),
            "n": len(self.samples),
            "unit": self.unit,
            "samples": [_round(s) for s in self.samples],
        }

    def text(self) -> str:
        if not self.samples:
            return "-"
        if len(self.samples) == 1:
            return f"{_fmt(self.median)} {self.unit} (n=1)"
        return f"{_fmt(self.median)} {self.unit} [{_fmt(self.low)}-{_fmt(self.high)}] (n={len(self.samples)})"


def _round(value: float) -> float | None:
    if value != value:  # NaN is not JSON
        return None
    return round(value, 5)


def _fmt(value: float) -> str:
    if value != value:
        return "nan"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def figure_text(d: dict[str, Any] | None) -> str:
    """A figure as :meth:`Figure.to_dict` wrote it, as text (``-`` when there is none)."""
    if not d or d.get("median") is None:
        return "-"
    return Figure(d["samples"], d["unit"]).text()


def ratio(numerator: Figure, denominator: Figure) -> Figure:
    """Sample-by-sample ratios (step i against step i: same data order, so the same batch)."""
    out = Figure(unit="x")
    out.samples = [n / d for n, d in zip(numerator.samples, denominator.samples) if d]
    return out


def quiet() -> None:
    """No progress bars or library warnings in the bench's output (the table is the output)."""
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's "Computing reference log probs" bar
    warnings.filterwarnings("ignore")
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    disable_progress_bar()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def timed(figure: Figure, device: torch.device | str = "cpu") -> Iterator[None]:
    sync(device)
    started = time.perf_counter()
    yield
    sync(device)
    figure.add(time.perf_counter() - started)


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at ``exec``. ``ru_maxrss`` does
    not: a worker forked from a 5 GB parent reports the parent's 5 GB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cuda_peak_mib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def reset_cuda_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def machine() -> dict[str, Any]:
    """The machine line of the table: CPU model, cores, torch threads, GPU if any, versions."""
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def machine_words(info: dict[str, Any]) -> str:
    """The machine in a few words: its CPU, cores and GPU."""
    gpu = f"GPU {info['gpu']}" if info.get("gpu") else "no GPU"
    return f"{info['cpu']}, {info['cores']} cores, {gpu}"


def machine_line(info: dict[str, Any]) -> str:
    """The table's machine line: :func:`machine_words`, torch's threads, the load, the versions."""
    load = info.get("load_average")
    load_text = f", load avg {load[0]}" if load else ""
    return (
        f"{machine_words(info)}, torch threads {info['torch_threads']}{load_text}; "
        f"torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}"
    )


def build_model(spec: str, workdir: Path) -> str:
    """Turn the bench's own model names into a saved directory; other specs pass through."""
    from alignlab.models.tiny import build_gpt2_sized_model, build_tiny_model

    target = workdir / spec
    if (target / "config.json").is_file():
        return str(target)
    if spec == "tiny":
        return str(build_tiny_model(target, chat=True))
    if spec == "tiny-base":
        return str(build_tiny_model(target, chat=False))
    if spec == "gpt2-sized":
        return str(build_gpt2_sized_model(target))
    return spec


def load_seed_lab():
    from alignlab.data.presets import load_preset

    return load_preset(PRESET)
