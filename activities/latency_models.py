"""The high-latency runbook's (seed 001) cluster requests: a deployment's scale, `kubectl scale`,
and the model warm-up POST. Pure pydantic (activities/latency.py does the work).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# On the Deployment a scale-up changed: which incident step did it, and the replicas it found,
# so a retried write recognises its own attempt and still knows the original.
SCALED_BY_ANNOTATION = "llm-runbooks.io/scaled-by"
REPLICAS_BEFORE_ANNOTATION = "llm-runbooks.io/replicas-before"
# On a model Service: where its warm-up endpoint is (else http://SERVICE.NAMESPACE.svc:PORT/v1/warmup).
WARMUP_URL_ANNOTATION = "llm-d.io/warmup-url"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentScaleQuery(_Input):
    """`kubectl get deployment NAME -n NS` (replicas, ready, GPUs per pod)."""

    namespace: str
    name: str


class DeploymentScale(BaseModel):
    namespace: str
    name: str
    replicas: int = Field(description="spec.replicas")
    ready_replicas: int = 0
    gpus_per_pod: int = Field(0, description="nvidia.com/gpu the pod template asks for (limits)")
    scaled_by: str | None = Field(None, description=f"the {SCALED_BY_ANNOTATION} annotation, if any")
    model: str | None = Field(None, description="the first container's `--model` argument (vLLM / llm-d)")


class ScaleRequest(_Input):
    """`kubectl scale deployment NAME --replicas=N -n NS`, stamped with `change_key` (incident id /
    step) so a retry is recognised; `rollback`: restore a recorded original and remove the stamp."""

    namespace: str
    name: str
    replicas: int = Field(ge=0)
    change_key: str = Field(min_length=1)
    action: str = "scale deployment"
    rollback: bool = False
    dry_run: bool = False


class WarmUpRequest(_Input):
    """`curl -X POST http://SERVICE:8080/v1/warmup -d '{"model": MODEL}'` (seed 001, model loading issues).

    The URL is the Service's `llm-d.io/warmup-url` annotation, else
    `http://SERVICE.NAMESPACE.svc:PORT/v1/warmup` (its first port)."""

    namespace: str
    service: str
    model: str = Field(min_length=1)
    timeout_seconds: float = Field(30, gt=0)
