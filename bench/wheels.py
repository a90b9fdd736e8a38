"""The wheels a CUDA machine without a network needs for the bench, and whether every requirement is met.

``bench/gpu.sh`` carries wheels to a machine that has CUDA PyTorch and most of the stack but no
trl or datasets (the device image: torch 2.11, transformers 5.17, huggingface_hub 1.33,
accelerate 1.15, tokenizers 0.23.2, peft; see its README). It installs:

- the lab's own packages (:data:`CORE`), always, at the versions the lab is tested with;
- an optional wheel (:data:`OPTIONAL`: bitsandbytes, for QLoRA) where the machine has none;
- a support wheel only where the machine's own version of that package is missing or fails a
  requirement of those packages (``fsspec``, say, whose upper bound ``datasets`` pins): the rest of
  the machine's stack is left as it is. ``huggingface_hub`` is deliberately not carried: 2.x needs
  ``httpx2``, which the image lacks, and the image's 1.33 meets every requirement (>=1.31, <3).

    python -m bench.wheels plan DIR   # the wheel files to install, one per line (reasons on stderr)
    python -m bench.wheels check      # every requirement of the lab's packages against what is installed

Only ``packaging`` and the standard library are used, so that it runs before anything is installed.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

#: Installed from the carried wheels whatever the machine has: the versions the lab is tested with.
CORE = ("trl", "datasets", "transformers", "peft")
#: Installed where the machine lacks them: what a section needs beyond the lab's requirements
#: (bitsandbytes: the scale section's QLoRA row; the image has none, and its wheel bundles CUDA 13's).
OPTIONAL = ("bitsandbytes",)
#: Packages whose requirements must hold for the bench to run (the core, and accelerate from the machine).
CHECKED = (*CORE, "accelerate")


def wheel_requirements(path: Path) -> list[Requirement]:
    """The run-time requirements (no extras) in a wheel's METADATA, for this Python and platform."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode("utf-8"))
    return _applicable(message.get_all("Requires-Dist") or [])


def installed_requirements(name: str) -> list[Requirement]:
    try:
        return _applicable(metadata.requires(name) or [])
    except metadata.PackageNotFoundError:
        return []


def _applicable(lines: list[str]) -> list[Requirement]:
    out = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            out.append(requirement)
    return out


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan(directory: Path) -> list[Path]:
    """The wheels to install: every core wheel, and each support wheel whose package the machine lacks or fails."""
    wheels = {}
    for path in sorted(directory.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        wheels[canonicalize_name(name)] = (path, version)
    missing = [name for name in CORE if canonicalize_name(name) not in wheels]
    if missing:
        raise SystemExit(f"{directory} lacks the wheels of {', '.join(missing)}: run bench/gpu.sh --fetch-wheels")
    chosen = [wheels[canonicalize_name(name)][0] for name in CORE]
    requirements = [r for name in CORE for r in wheel_requirements(wheels[canonicalize_name(name)][0])]
    requirements += [r for r in installed_requirements("accelerate")]
    for name, (path, version) in wheels.items():
        if name in {canonicalize_name(n) for n in CORE}:
            continue
        have = installed_version(name)
        if name in {canonicalize_name(n) for n in OPTIONAL}:
            if have is None:
                chosen.append(path)
                print(f"[wheels] {name}: installing carried {version} (not installed; optional)", file=sys.stderr)
            else:
                print(f"[wheels] {name}: keeping the machine's {have}", file=sys.stderr)
            continue
        needs = [r for r in requirements if canonicalize_name(r.name) == name]
        unmet = [str(r) for r in needs if have is None or not r.specifier.contains(have, prereleases=True)]
        if unmet:
            chosen.append(path)
            why = "not installed" if have is None else f"{have} fails {', '.join(unmet)}"
            print(f"[wheels] {name}: installing carried {version} ({why})", file=sys.stderr)
        elif not needs:
            print(f"[wheels] {name}: carried {version}, required by none of the lab's packages", file=sys.stderr)
        else:
            print(f"[wheels] {name}: keeping the machine's {have} (meets every requirement)", file=sys.stderr)
    return chosen


def check() -> list[str]:
    """Every requirement of :data:`CHECKED` against the installed versions; returns the unmet ones."""
    unmet = []
    for package in CHECKED:
        have = installed_version(package)
        if have is None:
            unmet.append(f"{package}: not installed")
            continue
        for requirement in installed_requirements(package):
            found = installed_version(requirement.name)
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                unmet.append(f"{package} {have} needs {requirement}, found {found or 'nothing'}")
    return unmet


def main(argv: list[str]) -> int:
    if argv[:1] == ["plan"] and len(argv) == 2:
        for path in plan(Path(argv[1])):
            print(path)
        return 0
    if argv[:1] == ["check"]:
        unmet = check()
        versions = ", ".join(f"{p} {installed_version(p)}" for p in CHECKED)
        print(f"[wheels] {versions}", file=sys.stderr)
        for line in unmet:
            print(f"[wheels] UNMET: {line}", file=sys.stderr)
        if not unmet:
            print(
                "[wheels] every requirement of trl, datasets, transformers, peft and accelerate is met", file=sys.stderr
            )
        return 1 if unmet else 0
    print(__doc__.split("\n\n")[-2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
