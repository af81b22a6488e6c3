"""Kubernetes API errors as on-call reads them: the API server's reason and message, never the raw
`ApiException` text (its HTTP response headers, audit ids and body dump).

`on_call_errors` (api.py) turns the errors a step expects into named failures; whatever else
escapes an activity (a 500, a 503 from an overloaded API server, a 409) is turned here, once for
every activity of the worker, into an ApplicationError of type `Kubernetes<Reason>` that says which
activity met it. Its retry stays what it was: the statuses a retry cannot fix (400, 401, 403, 404,
422) are non-retryable, every other one is retried by the activity's policy.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

# Statuses whose answer cannot change on a retry (as `on_call_errors` treats them).
FINAL_STATUSES = frozenset({400, 401, 403, 404, 422})


def api_status(err: ApiException) -> dict[str, Any]:
    """The Status object the API server sent ({} when the body is not one: a proxy's HTML page)."""
    try:
        status = json.loads(err.body or "")
    except (ValueError, TypeError):
        return {}
    return status if isinstance(status, dict) else {}


def api_failure(err: ApiException, doing: str) -> ApplicationError:
    """`err` for humans: '<doing>: the Kubernetes API server answered 503 ServiceUnavailable: <its message>'."""
    status = api_status(err)
    reason = str(status.get("reason") or err.reason or "").replace(" ", "") or "Error"
    message = status.get("message") or f"HTTP {err.status} {err.reason}"
    return ApplicationError(
        f"{doing}: the Kubernetes API server answered {err.status} {reason}: {message}",
        {"code": err.status, "reason": reason},
        type=f"Kubernetes{reason}",
        non_retryable=err.status in FINAL_STATUSES,
    )


class KubernetesApiErrors(Interceptor):
    """Worker interceptor: every activity's escaping ApiException becomes `api_failure(...)`."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Readable(next)


class _Readable(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApiException as err:
            # from None: the raw exception (headers and all) must not travel as the failure's cause
            raise api_failure(err, f"activity {getattr(input.fn, '__name__', 'unknown')}") from None
