"""Where a worker's CPU goes, from py-spy's raw (collapsed) stacks: `frame;frame;... count` per line.

`summarize` gives the heaviest functions by self and inclusive samples, and the share of samples
by package (our workflows, the Temporal SDK, pydantic, asyncio, ...), so a profile reads in a
glance in the bench JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
_PACKAGES = (
    "workflows",
    "activities",
    "triggers",
    "temporalio",
    "pydantic",
    "pydantic_core",
    "slack_sdk",
    "aiohttp",
    "httpx",
    "httpcore",
    "asyncio",
    "google/protobuf",
    "kubernetes",
    "json",
    "logging",
)


def _package(file: str) -> str:
    for name in _PACKAGES:
        if f"/{name}/" in file or file.startswith(f"{name}/"):
            return name
    return Path(file).name


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """{samples, self: [[func (file), %]], inclusive: [...], self_by_package: {package: %}}."""
    if not path.exists():
        return {"error": f"no py-spy output at {path}"}
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        names = []
        for frame in frames:
            m = _FRAME.match(frame)
            names.append((m.group("func"), m.group("file")) if m else (frame, ""))
        func, file = names[-1]
        self_counts[f"{func} ({_short(file)})"] += n
        by_package[_package(file)] += n
        for key in {f"{f} ({_short(fl)})" for f, fl in names}:
            incl_counts[key] += n

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "self_percent": share(self_counts),
        "inclusive_percent": share(incl_counts),
        "self_percent_by_package": {k: round(100 * v / total, 1) for k, v in by_package.most_common(15)},
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file.rsplit("/main/", 1)[-1]
