"""Field failures of one kind each, turned into tests.

- Tool output with a line we don't expect: nvidia-smi's infoROM warning (exit 14) next to an
  uncorrected-ECC GPU, probed through the simulated cluster.
(The webhook's cases are in tests/test_webhook.py and tests/test_fuzz_triggers.py, the drain's
in tests/test_pdb_drain.py.)
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from temporalio.testing import ActivityEnvironment

from activities.kube.gpu_probes import KubeGpuProbes
from activities.kube.gpus_models import NodeGpuProbeRequest
from simulator.gpu import GpuHealth
from simulator.server import SimulatedCluster


@pytest.mark.scenario("gpu-hardware-failure")
def test_infoROM_warning_does_not_hide_the_ecc_gpu_on_the_same_node(
    simulator: SimulatedCluster, kube_api: k8s.ApiClient
) -> None:
    node = "gpu-node-2"  # where the scenario gives a GPU a double-bit ECC error
    gpus = simulator.behaviour.gpus[node].gpus
    ecc = next(g for g in gpus if g.health is GpuHealth.DOUBLE_BIT_ECC)
    corrupted = next(g for g in gpus if g is not ecc)
    corrupted.inforom_corrupted = True

    req = NodeGpuProbeRequest(incident_id="inc-inforom", node=node, timeout_seconds=30, poll_seconds=0.1)
    probe = ActivityEnvironment().run(KubeGpuProbes(kube_api).probe_node_gpus, req)

    assert probe.completed and probe.exit_code == 14, probe
    assert "WARNING: infoROM is corrupted" in probe.output
    report = probe.report
    assert report is not None and len(report.gpus) == 8, "every GPU read despite the warning"
    assert [g.uuid for g in report.faulty_gpus] == [ecc.uuid]
    assert any("uncorrected ECC" in r and ecc.uuid in r for r in probe.reasons)
    assert any(f"infoROM corrupted on the GPU at PCI {corrupted.pci_bus_id[4:]}" in r for r in probe.reasons)
    assert "nvidia-smi exited 14" in report.notes
