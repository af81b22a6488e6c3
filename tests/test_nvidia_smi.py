"""nvidia-smi query output → per-GPU health, on output in nvidia-smi's own format.

Fixtures in tests/data/nvidia_smi/ follow the format of real `--format=csv,noheader,nounits`
output: values separated by ", ", numbers without units (power with two decimals, memory in
MiB), bracketed placeholders such as `[N/A]` and NVML errors such as `[GPU is lost]`.

- h100_capture_idle.txt and h100_mig_capture_idle.txt project the public captures
  linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt and linux-x86_64__nvidia-h100-mig__590.48.01.txt
  (github.com/utkuozdemir/nvidia_gpu_exporter, internal/captures/) onto PROBE_FIELDS, with units
  dropped as nounits does. The MIG capture shows a healthy GPU reading `[N/A]` for utilization.gpu.
- The failure sentences are nvidia-smi's own, as quoted in NVIDIA's and users' bug reports.

Captured real output: when the lead captures the probe command on a real GPU node, save it as
tests/data/nvidia_smi/real_<gpu>_<driver>.txt; test_real_capture runs on every such file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.nvidia_smi import (
    PROBE_FIELDS,
    GpuProbeReport,
    NvidiaSmiParseError,
    parse_query_gpu,
    query_gpu_command,
)

DATA = Path(__file__).parent / "data" / "nvidia_smi"


def parse(name: str, *, expected_gpus: int | None = 8, **kwargs: float) -> GpuProbeReport:
    return parse_query_gpu((DATA / name).read_text(), PROBE_FIELDS, expected_gpus=expected_gpus, **kwargs)


def faulty_indexes(report: GpuProbeReport) -> list[int | None]:
    return [g.index for g in report.faulty_gpus]


def test_probe_command_asks_for_the_probe_fields_without_header_or_units() -> None:
    assert query_gpu_command() == [
        "nvidia-smi",
        "--query-gpu=index,uuid,name,temperature.gpu,utilization.gpu,memory.used,memory.total,"
        "ecc.errors.uncorrected.volatile.total,power.draw",
        "--format=csv,noheader,nounits",
    ]


def test_healthy_node_reads_every_gpu() -> None:
    report = parse("healthy_a100x8.txt")
    assert report.healthy and report.reasons == []
    assert [g.index for g in report.gpus] == list(range(8))
    first = report.gpus[0]
    assert first.uuid == "GPU-4a1f2c3e-9b7d-4e21-8f0a-6c5d3b2e1f90"
    assert first.name == "NVIDIA A100-SXM4-80GB"
    assert (first.temperature_c, first.utilization_pct) == (38.0, 97.0)
    assert (first.memory_used_mib, first.memory_total_mib) == (74543.0, 81920.0)
    assert (first.ecc_uncorrected, first.power_draw_w) == (0, 312.48)
    assert first.readings["power.draw"] == "312.48"


def test_hot_gpu_is_named_with_its_temperature() -> None:
    report = parse("hot_gpu.txt")
    assert not report.healthy
    assert faulty_indexes(report) == [5]
    assert report.reasons == ["GPU 5 (GPU-e6a9c2d7-5b41-4f8e-9c3a-1a7f6e2b8d09): too hot: 91 °C (limit 85 °C)"]


def test_temperature_limit_is_configurable() -> None:
    assert parse("hot_gpu.txt", max_temp_c=95).healthy
    assert faulty_indexes(parse("healthy_a100x8.txt", max_temp_c=40)) == [1]


def test_uncorrected_ecc_errors_mark_the_gpu_faulty() -> None:
    report = parse("ecc_errors.txt")
    assert faulty_indexes(report) == [2]
    assert report.faulty_gpus[0].ecc_uncorrected == 2
    assert report.faulty_gpus[0].reasons == ["2 uncorrected ECC error(s) since the driver loaded"]


def test_na_readings_mark_the_gpu_faulty() -> None:
    report = parse("na_fields.txt")
    assert faulty_indexes(report) == [6]
    gpu = report.faulty_gpus[0]
    assert gpu.temperature_c is None and gpu.power_draw_w is None
    assert "temperature.gpu reads [N/A]" in gpu.reasons
    assert "power.draw reads [N/A]" in gpu.reasons
    # utilization and ECC read [N/A] on healthy GPUs too (MIG, ECC off): noted, not blamed
    assert "utilization.gpu reads [N/A]" in gpu.notes


def test_err_readings_mark_the_gpu_faulty() -> None:
    report = parse("err_fields.txt")
    assert faulty_indexes(report) == [1]
    assert report.faulty_gpus[0].reasons == [
        "temperature.gpu reads ERR! (the driver returned an error)",
        "utilization.gpu reads ERR! (the driver returned an error)",
        "power.draw reads ERR! (the driver returned an error)",
    ]


def test_lost_gpu_reports_nvml_error() -> None:
    report = parse("gpu_lost.txt")
    assert faulty_indexes(report) == [4]
    assert "temperature.gpu unreadable: GPU is lost" in report.faulty_gpus[0].reasons


def test_missing_gpu_is_counted_against_the_node_capacity() -> None:
    report = parse("missing_gpu.txt")
    assert not report.healthy
    assert report.faulty_gpus == []
    assert report.node_reasons == ["1 GPU(s) missing: nvidia-smi lists 7, the node should have 8"]
    assert sorted(g.index for g in report.gpus) == [0, 1, 2, 4, 5, 6, 7]


def test_missing_gpus_are_not_judged_without_an_expected_count() -> None:
    assert parse("missing_gpu.txt", expected_gpus=None).healthy


def test_one_unreachable_gpu_among_readable_ones() -> None:
    report = parse("handle_error_one_gpu.txt")
    assert len(report.gpus) == 7
    assert report.node_failure is None
    assert report.node_reasons == [
        "GPU at PCI 0000:4B:00.0 unreachable: Unknown Error",
        "1 GPU(s) missing: nvidia-smi lists 7, the node should have 8",
    ]


@pytest.mark.parametrize(
    ("name", "failure"),
    [
        (
            "driver_not_loaded.txt",
            "NVIDIA driver not loaded or not responding: NVIDIA-SMI has failed "
            "because it couldn't communicate with the NVIDIA driver.",
        ),
        ("no_devices.txt", "no NVIDIA GPUs visible on the node: No devices were found"),
        ("handle_error_only.txt", "GPU at PCI 0000:17:00.0 unreachable: Unknown Error"),
        (
            "nvml_version_mismatch.txt",
            "NVML could not initialise: Failed to initialize NVML: Driver/library version mismatch",
        ),
    ],
)
def test_nvidia_smi_failure_is_a_node_failure(name: str, failure: str) -> None:
    report = parse(name)
    assert not report.healthy
    assert report.gpus == []
    assert report.node_failure is not None and report.node_failure.startswith(failure)
    assert report.reasons[0] == report.node_failure


def test_public_h100_capture_is_healthy() -> None:
    report = parse("h100_capture_idle.txt", expected_gpus=1)
    assert report.healthy
    gpu = report.gpus[0]
    assert (gpu.name, gpu.temperature_c, gpu.memory_total_mib, gpu.power_draw_w) == (
        "NVIDIA H100 80GB HBM3",
        41.0,
        81559.0,
        69.85,
    )


def test_mig_gpu_without_utilization_is_still_healthy() -> None:
    report = parse("h100_mig_capture_idle.txt", expected_gpus=1)
    assert report.healthy
    assert report.gpus[0].utilization_pct is None
    assert report.gpus[0].notes == ["utilization.gpu reads [N/A]"]


def test_not_supported_is_an_absent_reading_not_a_fault() -> None:
    line = "0, GPU-4a1f2c3e-9b7d-4e21-8f0a-6c5d3b2e1f90, NVIDIA L4, 45, 12, 2048, 23034, [Not Supported], 27.80\n"
    report = parse_query_gpu(line, PROBE_FIELDS, expected_gpus=1)
    assert report.healthy
    assert report.gpus[0].ecc_uncorrected is None


def test_output_with_header_and_units_still_parses() -> None:
    text = (
        "index, uuid, name, temperature.gpu, utilization.gpu [%], memory.used [MiB], memory.total [MiB], "
        "ecc.errors.uncorrected.volatile.total, power.draw [W]\n"
        "0, GPU-00000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 41, 0 %, 0 MiB, 81559 MiB, "
        "0, 69.85 W\n"
    )
    report = parse_query_gpu(text, PROBE_FIELDS, expected_gpus=1)
    assert report.healthy
    assert (report.gpus[0].memory_total_mib, report.gpus[0].power_draw_w) == (81559.0, 69.85)


def test_other_field_lists_are_read_by_name() -> None:
    report = parse_query_gpu(
        "88, 301.50, [N/A]\n", ["temperature.gpu", "power.draw", "memory.used"], expected_gpus=None
    )
    gpu = report.gpus[0]
    assert gpu.index is None and gpu.temperature_c == 88.0
    assert gpu.reasons == ["memory.used reads [N/A]", "too hot: 88 °C (limit 85 °C)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nvidia-smi printed nothing"),
        ("  \n\n", "nvidia-smi printed nothing"),
        ("bash: nvidia-smi: command not found\n", "line 1: expected 9 comma-separated values"),
        ("0, GPU-x, NVIDIA A100-SXM4-80GB, 38, 97\n", "got 5"),
        (
            "0, GPU-x, NVIDIA A100-SXM4-80GB, warm, 97, 1, 81920, 0, 60.00\n",
            "line 1: temperature.gpu should be a number, got 'warm'",
        ),
        ('{"gpus": []}\n', "expected 9 comma-separated values"),
    ],
)
def test_garbage_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(NvidiaSmiParseError, match=message.replace("(", r"\(")):
        parse_query_gpu(text, PROBE_FIELDS, expected_gpus=8)


def test_duplicate_fields_are_refused() -> None:
    with pytest.raises(NvidiaSmiParseError, match="distinct"):
        parse_query_gpu("1, 1\n", ["index", "index"], expected_gpus=None)


def test_report_round_trips_through_json() -> None:
    """Workflows receive the report through Temporal's pydantic converter."""
    report = parse("hot_gpu.txt")
    data = report.model_dump(mode="json")
    assert data["healthy"] is False and data["reasons"] == report.reasons
    assert GpuProbeReport.model_validate(data) == report


REAL_CAPTURES = sorted(DATA.glob("real_*.txt"))


@pytest.mark.skipif(not REAL_CAPTURES, reason="no real nvidia-smi capture in tests/data/nvidia_smi yet")
@pytest.mark.parametrize("path", REAL_CAPTURES, ids=lambda p: p.name)
def test_real_capture(path: Path) -> None:
    """A capture of the probe command from a real GPU node parses into one reading per GPU."""
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.strip()]
    report = parse_query_gpu(text, PROBE_FIELDS, expected_gpus=len(rows))
    assert report.node_failure is None
    assert len(report.gpus) == len(rows)
    for gpu in report.gpus:
        assert gpu.uuid and gpu.uuid.startswith("GPU-")
        assert gpu.memory_total_mib and gpu.memory_total_mib > 0
        assert gpu.temperature_c is not None


# ---- lines nvidia-smi prints around its rows (a warning must not hide an ECC fault) ----

INFOROM = "WARNING: infoROM is corrupted at gpu 0000:47:00.0"


@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_warning_line_anywhere_still_yields_every_gpu_and_its_faults(where: str) -> None:
    rows = (DATA / "ecc_errors.txt").read_text().splitlines()
    at = {"before": 0, "between": 4, "after": len(rows)}[where]
    text = "\n".join(rows[:at] + [INFOROM] + rows[at:]) + "\n"

    report = parse_query_gpu(text, PROBE_FIELDS, expected_gpus=8)

    assert [g.index for g in report.gpus] == list(range(8))
    assert faulty_indexes(report) == [2], "the uncorrected-ECC GPU is still found"
    assert report.gpus[2].reasons == ["2 uncorrected ECC error(s) since the driver loaded"]
    # the warning itself is a health finding about the GPU at that PCI address, not a parse error
    assert report.node_reasons == [
        "infoROM corrupted on the GPU at PCI 0000:47:00.0: its ECC and page-retirement records cannot be "
        "trusted; the board needs reflashing or replacement"
    ]
    assert not report.healthy and report.node_failure is None


def test_infoROM_warning_alone_on_a_healthy_node_is_a_finding() -> None:
    text = (DATA / "healthy_a100x8.txt").read_text() + INFOROM + "\n"
    report = parse_query_gpu(text, PROBE_FIELDS, expected_gpus=8)
    assert len(report.gpus) == 8 and all(g.healthy for g in report.gpus)
    assert not report.healthy and "infoROM corrupted" in report.reasons[0]


@pytest.mark.parametrize(
    "stray",
    [
        "WARNING: something new the driver wants to say",
        "Failed to read a reading, continuing",
        "bash: warning: setlocale: LC_ALL: cannot change locale (en_US.UTF-8)",
    ],
)
def test_unknown_lines_become_notes_and_every_row_is_kept(stray: str) -> None:
    rows = (DATA / "healthy_a100x8.txt").read_text().splitlines()
    text = "\n".join([stray, *rows[:3], stray, *rows[3:], stray]) + "\n"
    report = parse_query_gpu(text, PROBE_FIELDS, expected_gpus=8)
    assert report.healthy and len(report.gpus) == 8
    assert len(report.notes) == 3 and all(stray[:40] in n for n in report.notes)
    assert report.notes[0].startswith("line 1 is not a GPU row")


def test_one_unreadable_row_is_a_note_and_the_gpu_counts_as_missing() -> None:
    rows = (DATA / "healthy_a100x8.txt").read_text().splitlines()
    rows[5] = rows[5].replace(", 34, ", ", warm, ")  # GPU 5's temperature is not a number
    report = parse_query_gpu("\n".join(rows) + "\n", PROBE_FIELDS, expected_gpus=8)
    assert [g.index for g in report.gpus] == [0, 1, 2, 3, 4, 6, 7]
    assert report.node_reasons == ["1 GPU(s) missing: nvidia-smi lists 7, the node should have 8"]
    assert "line 6 is not a GPU row" in report.notes[0]


def test_output_with_no_readable_row_is_unreadable_and_says_why() -> None:
    with pytest.raises(NvidiaSmiParseError, match="no GPU row could be read: line 1: expected 9"):
        parse_query_gpu("WARNING: something new\nnot, a, row\n", PROBE_FIELDS, expected_gpus=8)
