"""The KServe playbooks' rollback on request: recorded InferenceService patches put back, newest first."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

from workflows.incident import KServe

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import InferenceServicePatch
    from activities.models import ClusterChange


async def restore_patches(
    kserve: KServe, changes: list[ClusterChange], *, why: str, path: Callable[[ClusterChange], str], action: str
) -> int:
    """Patch each change's field back to its recorded `before`, newest first (`path`: the change's JSON
    pointer, `action`: how the patch is recorded); returns how many were restored. Stops when automation
    may no longer write (the incident records why)."""
    restored = 0
    for c in reversed([c for c in changes if c.applied and not c.dry_run]):
        done = await kserve.patch_inference_service(
            InferenceServicePatch(
                namespace=c.namespace or "", name=c.name, path=path(c), value=c.before, action=action, rollback=True
            ),
            finding=f"rollback {why}",
        )
        if done is None:
            break
        restored += 1
    return restored
