"""Simulated NVIDIA GPUs of the GPU nodes, and what `nvidia-smi` prints about them.

The output follows the real tool byte for byte where playbooks parse it: `--query-gpu=...
--format=csv[,noheader][,nounits]` prints one line per GPU with ", " between fields, units in
the header (`memory.used [MiB]`) and after values unless `nounits`; a reading the GPU cannot
give is `[N/A]`, one it failed to read is `ERR!`; an unknown field or a bad argument exits 2;
no driver exits 9 with the driver message. A GPU whose infoROM is corrupted still reports its
readings; nvidia-smi adds `WARNING: infoROM is corrupted at gpu BUS` after the rows and exits 14.
"""

from __future__ import annotations

import enum
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

DRIVER_VERSION = "535.129.03"
CUDA_VERSION = "12.2"
A100_NAME = "NVIDIA A100-SXM4-80GB"
A100_MEMORY_MIB = 81920
A100_POWER_LIMIT_W = 400.0
# PCI addresses of the eight A100s of an HGX/DGX A100 board, in nvidia-smi's index order.
_HGX_BUS_IDS = ("07", "0F", "47", "4E", "87", "90", "B7", "BD")

NA = "[N/A]"
ERR = "ERR!"
DRIVER_NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n"
)
INVALID_ARGUMENTS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"
EXIT_OK, EXIT_INVALID_ARGUMENT, EXIT_DRIVER_NOT_LOADED = 0, 2, 9
EXIT_INFOROM_CORRUPTED = 14


class GpuHealth(enum.Enum):
    OK = "ok"
    # XID 48: a double-bit ECC error. The GPU needs a reset: uncorrected ECC counts are set,
    # its sensors stop answering and every CUDA context on it dies.
    DOUBLE_BIT_ECC = "double-bit-ecc"


@dataclass
class Gpu:
    index: int
    uuid: str
    pci_bus_id: str
    name: str = A100_NAME
    memory_total_mib: int = A100_MEMORY_MIB
    health: GpuHealth = GpuHealth.OK
    holder: str | None = None  # uid of the pod the device plugin allocated this GPU to
    inforom_corrupted: bool = False  # nvidia-smi warns about it and exits 14, the readings still come
    load: float = 0.0  # 0..1, set by the cluster from what its holder is doing

    @property
    def xid(self) -> int:
        """The last XID error the driver logged for this GPU (0: none), as DCGM reports it."""
        return 48 if self.health is GpuHealth.DOUBLE_BIT_ECC else 0

    @property
    def ecc_uncorrected(self) -> int:
        return 2 if self.health is GpuHealth.DOUBLE_BIT_ECC else 0

    @property
    def temperature_c(self) -> int:
        return 31 + self.index % 3 + round(self.load * 34)

    @property
    def utilization_pct(self) -> int:
        if self.health is not GpuHealth.OK:
            return 0
        return min(100, round(self.load * 100))

    @property
    def memory_used_mib(self) -> int:
        # vLLM preallocates 90% of the GPU's memory for weights and KV cache
        return round(self.memory_total_mib * 0.9) if self.holder else 4

    @property
    def power_draw_w(self) -> float:
        return round(58.0 + self.index * 0.37 + self.load * 270.0, 2)


@dataclass
class NodeGpus:
    node: str
    gpus: list[Gpu]
    driver_loaded: bool = True

    def free(self) -> list[Gpu]:
        return [g for g in self.gpus if g.holder is None]

    def held_by(self, pod_uid: str) -> list[Gpu]:
        return [g for g in self.gpus if g.holder == pod_uid]

    def allocate(self, pod_uid: str, count: int) -> list[Gpu]:
        """Give the lowest-indexed free GPUs to a pod, as the device plugin does."""
        chosen = self.free()[:count]
        for gpu in chosen:
            gpu.holder = pod_uid
        return chosen

    def release(self, pod_uid: str) -> None:
        for gpu in self.held_by(pod_uid):
            gpu.holder, gpu.load = None, 0.0


def make_node_gpus(node: str, count: int, seed: int) -> NodeGpus:
    """`count` A100s with stable UUIDs derived from the node name and the cluster's seed."""
    gpus = []
    for i in range(count):
        gpu_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{seed}.{node}.gpu{i}")
        bus = _HGX_BUS_IDS[i % len(_HGX_BUS_IDS)]
        gpus.append(Gpu(index=i, uuid=f"GPU-{gpu_uuid}", pci_bus_id=f"00000000:{bus}:00.0"))
    return NodeGpus(node=node, gpus=gpus)


# ---- --query-gpu fields -----------------------------------------------------------------

_Reader = Callable[[Gpu, NodeGpus], str]  # a value as printed: a number, [N/A] or ERR!


@dataclass(frozen=True)
class _Field:
    unit: str  # "" when nvidia-smi prints none
    read: _Reader


def _sensor(value: Callable[[Gpu], object]) -> _Reader:
    """A reading a GPU in a fault state fails to give (nvidia-smi prints ERR!)."""
    return lambda g, _n: ERR if g.health is not GpuHealth.OK else str(value(g))


def _unsupported_when_faulty(value: Callable[[Gpu], str]) -> _Reader:
    """A reading the driver stops offering for a GPU that needs a reset ([N/A])."""
    return lambda g, _n: NA if g.health is not GpuHealth.OK else value(g)


_FIELDS: dict[str, _Field] = {
    "timestamp": _Field("", lambda _g, _n: datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]),
    "driver_version": _Field("", lambda _g, _n: DRIVER_VERSION),
    "count": _Field("", lambda _g, n: str(len(n.gpus))),
    "index": _Field("", lambda g, _n: str(g.index)),
    "name": _Field("", lambda g, _n: g.name),
    "uuid": _Field("", lambda g, _n: g.uuid),
    "serial": _Field("", lambda g, _n: f"1323{int(g.uuid[4:12], 16) % 10**9:09d}"),
    "pci.bus_id": _Field("", lambda g, _n: g.pci_bus_id),
    "pstate": _Field("", lambda g, _n: "P0"),
    "fan.speed": _Field("%", lambda _g, _n: NA),  # SXM boards have no fan of their own
    "temperature.gpu": _Field("", _sensor(lambda g: g.temperature_c)),
    "utilization.gpu": _Field("%", _sensor(lambda g: g.utilization_pct)),
    "utilization.memory": _Field("%", _sensor(lambda g: round(g.utilization_pct * 0.6))),
    "memory.total": _Field("MiB", lambda g, _n: str(g.memory_total_mib)),
    "memory.used": _Field("MiB", lambda g, _n: str(g.memory_used_mib)),
    "memory.free": _Field("MiB", lambda g, _n: str(g.memory_total_mib - g.memory_used_mib)),
    "ecc.mode.current": _Field("", lambda _g, _n: "Enabled"),
    "ecc.errors.corrected.volatile.total": _Field("", lambda _g, _n: "0"),
    "ecc.errors.uncorrected.volatile.total": _Field("", lambda g, _n: str(g.ecc_uncorrected)),
    "ecc.errors.uncorrected.aggregate.total": _Field("", lambda g, _n: str(g.ecc_uncorrected)),
    "power.draw": _Field("W", _unsupported_when_faulty(lambda g: f"{g.power_draw_w:.2f}")),
    "power.limit": _Field("W", lambda _g, _n: f"{A100_POWER_LIMIT_W:.2f}"),
    "clocks.sm": _Field("MHz", _sensor(lambda g: 1410 if g.load else 210)),
}
# The aliases nvidia-smi accepts for the same properties.
_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_serial": "serial",
    "gpu_bus_id": "pci.bus_id",
    "temperature.gpu.current": "temperature.gpu",
    "memory.used.current": "memory.used",
}
SUPPORTED_FIELDS = tuple(_FIELDS) + tuple(_ALIASES)


@dataclass(frozen=True)
class SmiResult:
    exit_code: int
    output: str


@dataclass
class _Args:
    query: list[str] = field(default_factory=list)
    fmt: set[str] = field(default_factory=set)
    ids: list[int] | None = None
    list_gpus: bool = False


def find_nvidia_smi(command: list[str]) -> list[str] | None:
    """The arguments of the nvidia-smi call in a container's command+args, or None.

    Handles both `["nvidia-smi", "--query-gpu=..."]` and `["sh", "-c", "nvidia-smi ... | ..."]`.
    """
    for i, word in enumerate(command):
        if word.rsplit("/", 1)[-1] == "nvidia-smi":
            return list(command[i + 1 :])
        if "nvidia-smi" in word and " " in word:  # a shell script
            try:
                tokens = shlex.split(word)
            except ValueError:
                continue
            found = find_nvidia_smi(tokens)
            if found is not None:
                return _until_shell_operator(found)
    return None


def _until_shell_operator(tokens: list[str]) -> list[str]:
    for i, token in enumerate(tokens):
        if token in ("|", "||", "&&", ";", ">", ">>", "2>&1"):
            return tokens[:i]
    return tokens


def run_nvidia_smi(args: list[str], node: NodeGpus, visible: list[Gpu] | None = None) -> SmiResult:
    """What `nvidia-smi ARGS` prints on `node`, seeing `visible` GPUs (default: all of them)."""
    if not node.driver_loaded:
        return SmiResult(EXIT_DRIVER_NOT_LOADED, DRIVER_NOT_LOADED)
    parsed = _parse(args)
    if parsed is None:
        return SmiResult(EXIT_INVALID_ARGUMENT, INVALID_ARGUMENTS)
    gpus = visible if visible is not None else node.gpus
    if parsed.ids is not None:
        gpus = [g for g in gpus if g.index in parsed.ids]
    if parsed.list_gpus:
        return SmiResult(EXIT_OK, "".join(f"GPU {g.index}: {g.name} (UUID: {g.uuid})\n" for g in gpus))
    if parsed.query:
        return _query(parsed, gpus, node)
    return SmiResult(EXIT_OK, _table(gpus))


def _parse(args: list[str]) -> _Args | None:
    parsed = _Args()
    words = iter(args)
    for word in words:
        name, eq, value = word.partition("=")
        if name in ("--query-gpu", "--format", "-i", "--id") and not eq:
            value = next(words, "")
        if name == "--query-gpu":
            parsed.query = [f.strip() for f in value.split(",") if f.strip()]
        elif name == "--format":
            parsed.fmt = {f.strip() for f in value.split(",")}
            if "csv" not in parsed.fmt or not parsed.fmt <= {"csv", "noheader", "nounits"}:
                return None
        elif name in ("-i", "--id"):
            try:
                parsed.ids = [int(i) for i in value.split(",")]
            except ValueError:
                return None
        elif name in ("-L", "--list-gpus"):
            parsed.list_gpus = True
        else:
            return None
    if parsed.query and not parsed.fmt:
        return None
    return parsed


def _query(parsed: _Args, gpus: list[Gpu], node: NodeGpus) -> SmiResult:
    for name in parsed.query:
        if name not in _FIELDS and name not in _ALIASES:
            return SmiResult(EXIT_INVALID_ARGUMENT, f'Field "{name}" is not a valid field to query.\n\n')
    fields = [(name, _FIELDS[_ALIASES.get(name, name)]) for name in parsed.query]
    units = "nounits" not in parsed.fmt
    lines = []
    if "noheader" not in parsed.fmt:
        lines.append(", ".join(f"{name} [{f.unit}]" if f.unit else name for name, f in fields))
    for gpu in gpus:
        values = []
        for _name, f in fields:
            value = f.read(gpu, node)
            if units and f.unit and value not in (NA, ERR):
                value = f"{value} {f.unit}"
            values.append(value)
        lines.append(", ".join(values))
    corrupted = [g for g in gpus if g.inforom_corrupted]
    lines += [f"WARNING: infoROM is corrupted at gpu {g.pci_bus_id[4:]}" for g in corrupted]
    return SmiResult(EXIT_INFOROM_CORRUPTED if corrupted else EXIT_OK, "".join(line + "\n" for line in lines))


def _table(gpus: list[Gpu]) -> str:
    """The default `nvidia-smi` report (driver 535 layout)."""
    rule = "+---------------------------------------------------------------------------------------+"
    cells = "+-----------------------------------------+----------------------+----------------------+"
    lines = [
        datetime.now().strftime("%a %b %d %H:%M:%S %Y       "),
        rule,
        f"| NVIDIA-SMI {DRIVER_VERSION:<22} Driver Version: {DRIVER_VERSION:<12} CUDA Version: {CUDA_VERSION:<9}|",
        "|-----------------------------------------+----------------------+----------------------+",
        "| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |",
        "|                                         |                      |               MIG M. |",
        "|=========================================+======================+======================|",
    ]
    for g in gpus:
        ok = g.health is GpuHealth.OK
        temp = f"{g.temperature_c}C" if ok else ERR
        power = (
            f"{round(g.power_draw_w)}W / {round(A100_POWER_LIMIT_W)}W"
            if ok
            else f"{ERR} / {round(A100_POWER_LIMIT_W)}W"
        )
        util = f"{g.utilization_pct}%" if ok else ERR
        memory = f"{g.memory_used_mib}MiB / {g.memory_total_mib}MiB"
        lines += [
            f"| {g.index:>3}  {g.name:<31}On  | {g.pci_bus_id} Off | {g.ecc_uncorrected:>20} |",
            f"| N/A {temp:>5}   P0 {power:>24} | {memory:>20} | {util:>8}      Default |",
            "|                                         |                      |             Disabled |",
            cells,
        ]
    lines += [
        "",
        rule,
        "| Processes:                                                                            |",
        "|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |",
        "|        ID   ID                                                             Usage      |",
        "|=======================================================================================|",
    ]
    holders = [g for g in gpus if g.holder]
    if not holders:
        lines.append("|  No running processes found                                                           |")
    for g in holders:
        used = f"{g.memory_used_mib - 4}MiB"
        lines.append(f"| {g.index:>4}   N/A  N/A {4100 + g.index:>10}      C   {'python3':<38}{used:>10} |")
    lines.append(rule)
    return "\n".join(lines) + "\n"
