"""Reading `nvidia-smi --query-gpu ... --format=csv,noheader,nounits` into per-GPU health.

Pure parsing, no I/O: the probe activities (activities/kube/gpu_probes.py) run nvidia-smi on the
node and hand its output here. The format is nvidia-smi's own: one line per GPU, values separated by
", ", numbers without units, and placeholders in brackets where a value cannot be read
(`[N/A]`, `[Not Supported]`, `[Unknown Error]`, `[GPU is lost]`, ...). When nvidia-smi cannot
talk to the driver at all it prints one sentence instead of rows; that is a node-level failure.

nvidia-smi also prints lines of its own before, between or after the rows (`WARNING: infoROM is
corrupted at gpu 0000:3B:00.0`, exit code 14). Every row that reads as a GPU is kept; a line
that does not is kept as a note, and the warnings we know are findings (see `_KNOWN_WARNINGS`).
The output is unreadable only when not one row can be read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, Field, computed_field

# What the probe asks for: the fields an on-call engineer looks at when a GPU node misbehaves.
PROBE_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "temperature.gpu",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "ecc.errors.uncorrected.volatile.total",
    "power.draw",
)


def query_gpu_command(fields: Sequence[str] = PROBE_FIELDS) -> list[str]:
    """The exact nvidia-smi command line whose output `parse_query_gpu` reads."""
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


class NvidiaSmiParseError(ValueError):
    """The text is neither nvidia-smi query output nor one of its known failure messages."""


class GpuHealth(BaseModel):
    """One GPU as nvidia-smi reported it, with every reason it is not fit to serve."""

    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    temperature_c: float | None = None
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    ecc_uncorrected: int | None = Field(None, description="uncorrected ECC errors since driver load")
    power_draw_w: float | None = None
    readings: dict[str, str] = Field(description="every queried field as nvidia-smi printed it")
    reasons: list[str] = Field(default_factory=list, description="why this GPU is not fit to serve")
    notes: list[str] = Field(default_factory=list, description="oddities that are not faults")

    @computed_field
    @property
    def healthy(self) -> bool:
        return not self.reasons

    @property
    def label(self) -> str:
        """How the incident thread names this GPU: 'GPU 3 (GPU-5f1c...)'."""
        index = "?" if self.index is None else str(self.index)
        return f"GPU {index} ({self.uuid})" if self.uuid else f"GPU {index}"


class GpuProbeReport(BaseModel):
    """What one nvidia-smi run says about a node's GPUs."""

    node_failure: str | None = Field(None, description="nvidia-smi could not read the GPUs at all (driver, no devices)")
    expected_gpus: int | None = None
    gpus: list[GpuHealth] = Field(default_factory=list)
    node_reasons: list[str] = Field(
        default_factory=list, description="node-level problems: GPUs missing, handles lost, infoROM corrupted"
    )
    notes: list[str] = Field(
        default_factory=list, description="lines nvidia-smi printed that are neither rows nor faults, as printed"
    )

    @computed_field
    @property
    def healthy(self) -> bool:
        return self.node_failure is None and not self.node_reasons and all(g.healthy for g in self.gpus)

    @property
    def faulty_gpus(self) -> list[GpuHealth]:
        return [g for g in self.gpus if not g.healthy]

    @computed_field
    @property
    def reasons(self) -> list[str]:
        """Every problem in one list, node-level first, as the incident thread shows them."""
        head = [self.node_failure] if self.node_failure else []
        per_gpu = [f"{g.label}: {r}" for g in self.gpus for r in g.reasons]
        return head + self.node_reasons + per_gpu


# nvidia-smi's whole-node failure sentences, matched loosely (drivers reword them slightly) and
# translated into what the on-call engineer should conclude.
_NODE_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"couldn't communicate with the NVIDIA driver", re.I), "NVIDIA driver not loaded or not responding"),
    (re.compile(r"^No devices were found", re.I), "no NVIDIA GPUs visible on the node"),
    (re.compile(r"Failed to initialize NVML", re.I), "NVML could not initialise"),
)
# "Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error" (older drivers
# print "GPU0000:..." without the space): one GPU the driver knows but cannot reach.
_LOST_HANDLE = re.compile(
    r"^Unable to determine the device handle for GPU\s*"
    r"(?P<bus>[0-9a-f]+:[0-9a-f]+:[0-9a-f]+\.[0-9a-f]):\s*(?P<error>.+)$",
    re.I,
)

# Warnings nvidia-smi prints around its rows that say something about the GPU's health, and what
# the on-call engineer should conclude. Any other line that is not a row is kept as a note.
_KNOWN_WARNINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    # NVIDIA: a corrupted infoROM makes the GPU's stored ECC and page-retirement records unreliable;
    # the board needs reflashing or an RMA. nvidia-smi exits 14 when it sees it.
    (
        re.compile(r"infoROM is corrupted at gpu\s*(?P<bus>[0-9a-f]+:[0-9a-f]+:[0-9a-f]+\.[0-9a-f])", re.I),
        "infoROM corrupted on the GPU at PCI {bus}: its ECC and page-retirement records cannot be trusted; "
        "the board needs reflashing or replacement",
    ),
)

_NA = "[N/A]"
# A GPU that works always reports these; [N/A] here means the driver lost it. Other fields read
# [N/A] on healthy GPUs: utilization.gpu under MIG, ECC counters with ECC switched off.
_MUST_READ = frozenset({"index", "uuid", "name", "temperature.gpu", "memory.used", "memory.total", "power.draw"})
# Placeholders that mean "this GPU model has no such reading": not a fault.
_ABSENT = frozenset({"[Not Supported]", "[Requested functionality has been deprecated]"})
# "ERR!" is how nvidia-smi's tables mark a reading the driver returned an error for.
_ERR = "ERR!"
_BRACKETED = re.compile(r"^\[(?P<text>[^\]]+)\]$")
# A number, as nvidia-smi prints it with nounits, or with its unit when someone forgot nounits.
_NUMBER = re.compile(r"^(?P<num>-?\d+(?:\.\d+)?)(?: (?:W|MiB|%|MHz|C|us))?$")

_FLOAT_FIELDS = {
    "temperature.gpu": "temperature_c",
    "utilization.gpu": "utilization_pct",
    "memory.used": "memory_used_mib",
    "memory.total": "memory_total_mib",
    "power.draw": "power_draw_w",
}
_INT_FIELDS = {"index": "index", "ecc.errors.uncorrected.volatile.total": "ecc_uncorrected"}
_TEXT_FIELDS = {"uuid": "uuid", "name": "name"}


def parse_query_gpu(
    csv_text: str, fields: Sequence[str], *, expected_gpus: int | None, max_temp_c: float = 85
) -> GpuProbeReport:
    """Parse nvidia-smi's query output for `fields`, judging each GPU's health.

    `expected_gpus` is the node's GPU count as Kubernetes knows it (capacity, or the GPU feature
    discovery label); fewer rows than that means GPUs have dropped off. Lines that are not rows
    (warnings, stray output) go to `notes`, known warnings to `node_reasons`. Raises
    NvidiaSmiParseError only when no line reads as a GPU row, a known failure or a known warning.
    """
    fields = [f.strip() for f in fields]
    if not fields or len(set(fields)) != len(fields):
        raise NvidiaSmiParseError(f"query fields must be non-empty and distinct, got {fields!r}")
    lines = [line.strip() for line in csv_text.splitlines() if line.strip()]
    if not lines:
        raise NvidiaSmiParseError("nvidia-smi printed nothing: expected one line per GPU or an error message")

    node_failure = _node_failure(lines)
    if node_failure:
        return GpuProbeReport(node_failure=node_failure, expected_gpus=expected_gpus)

    gpus: list[GpuHealth] = []
    unreachable: list[str] = []
    findings: list[str] = []
    notes: list[str] = []
    problems: list[str] = []  # why each unrecognised line is not a row: the error when no row reads
    for number, line in enumerate(lines, start=1):
        lost = _LOST_HANDLE.match(line)
        if lost:
            unreachable.append(f"GPU at PCI {lost['bus']} unreachable: {lost['error'].strip()}")
            continue
        warning = _known_warning(line)
        if warning:
            findings.append(warning)
            continue
        if _is_header(line, fields):
            continue
        try:
            gpus.append(_parse_row(line, number, fields, max_temp_c))
        except NvidiaSmiParseError as err:
            problems.append(str(err))
            notes.append(f"line {number} is not a GPU row: {line[:200]}")
    if not gpus:
        if unreachable:
            return GpuProbeReport(
                node_failure="; ".join(unreachable), expected_gpus=expected_gpus, node_reasons=findings, notes=notes
            )
        if not findings:
            raise NvidiaSmiParseError("no GPU row could be read: " + "; ".join(problems[:3]))
    node_reasons = unreachable + findings
    if expected_gpus is not None and len(gpus) < expected_gpus:
        node_reasons.append(
            f"{expected_gpus - len(gpus)} GPU(s) missing: nvidia-smi lists {len(gpus)}, "
            f"the node should have {expected_gpus}"
        )
    return GpuProbeReport(expected_gpus=expected_gpus, gpus=gpus, node_reasons=node_reasons, notes=notes)


def _known_warning(line: str) -> str | None:
    for pattern, meaning in _KNOWN_WARNINGS:
        found = pattern.search(line)
        if found:
            return meaning.format(**found.groupdict())
    return None


def _node_failure(lines: list[str]) -> str | None:
    for pattern, meaning in _NODE_FAILURES:
        for line in lines:
            if pattern.search(line):
                return f"{meaning}: {line}"
    return None


def _is_header(line: str, fields: list[str]) -> bool:
    """Output run without `noheader`: 'index, uuid, memory.used [MiB], ...'."""
    names = [re.sub(r" \[[^\]]*\]$", "", cell) for cell in line.split(", ")]
    return names == fields


def _split_row(line: str, number: int, fields: list[str]) -> list[str]:
    cells = [cell.strip() for cell in line.split(",")]
    surplus = len(cells) - len(fields)
    # Only a product name could contain a comma; give the surplus back to it.
    if surplus > 0 and "name" in fields:
        at = fields.index("name")
        cells[at : at + surplus + 1] = [", ".join(cells[at : at + surplus + 1])]
    if len(cells) != len(fields):
        raise NvidiaSmiParseError(
            f"line {number}: expected {len(fields)} comma-separated values ({', '.join(fields)}), "
            f"got {len(cells)}: {line[:200]!r}"
        )
    return cells


def _parse_row(line: str, number: int, fields: list[str], max_temp_c: float) -> GpuHealth:
    cells = _split_row(line, number, fields)
    readings = dict(zip(fields, cells))
    values: dict[str, object] = {}
    reasons: list[str] = []
    notes: list[str] = []
    for field, raw in readings.items():
        problem = _unreadable(raw)
        if raw == _NA and field not in _MUST_READ:
            notes.append(f"{field} reads [N/A]")
        elif problem:
            reasons.append(f"{field} {problem}")
        elif raw not in _ABSENT:
            _store_value(values, field, raw, number)
    gpu = GpuHealth(readings=readings, reasons=reasons, notes=notes, **values)
    gpu.reasons.extend(_judge(gpu, max_temp_c))
    return gpu


def _unreadable(raw: str) -> str | None:
    """Why a cell cannot be read (a fault for fields in _MUST_READ), or None."""
    if raw == _NA:
        return "reads [N/A]"
    if raw == _ERR:
        return "reads ERR! (the driver returned an error)"
    bracketed = _BRACKETED.match(raw)
    if bracketed and raw not in _ABSENT:
        return f"unreadable: {bracketed['text']}"
    return None


def _store_value(values: dict[str, object], field: str, raw: str, number: int) -> None:
    if field in _TEXT_FIELDS:
        values[_TEXT_FIELDS[field]] = raw
        return
    if field not in _FLOAT_FIELDS and field not in _INT_FIELDS:
        return  # kept in readings only
    m = _NUMBER.match(raw)
    if not m:
        raise NvidiaSmiParseError(f"line {number}: {field} should be a number, got {raw!r}")
    if field in _INT_FIELDS:
        values[_INT_FIELDS[field]] = int(float(m["num"]))
    else:
        values[_FLOAT_FIELDS[field]] = float(m["num"])


def _judge(gpu: GpuHealth, max_temp_c: float) -> list[str]:
    reasons = []
    if gpu.temperature_c is not None and gpu.temperature_c > max_temp_c:
        reasons.append(f"too hot: {gpu.temperature_c:g} °C (limit {max_temp_c:g} °C)")
    if gpu.ecc_uncorrected:
        reasons.append(f"{gpu.ecc_uncorrected} uncorrected ECC error(s) since the driver loaded")
    return reasons
