"""Search attributes an incident commander filters incidents by in the Temporal Web UI."""

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey

RUNBOOK = SearchAttributeKey.for_keyword("Runbook")
INCIDENT_SEVERITY = SearchAttributeKey.for_keyword("IncidentSeverity")
INCIDENT_STATUS = SearchAttributeKey.for_keyword("IncidentStatus")
ALERT_NAME = SearchAttributeKey.for_keyword("AlertName")
ESCALATION_LEVEL = SearchAttributeKey.for_int("EscalationLevel")
TARGET_NAMESPACE = SearchAttributeKey.for_keyword("TargetNamespace")
# The cluster the alert came from (settings/clusters.py); set by the triggers at start.
CLUSTER = SearchAttributeKey.for_keyword("Cluster")

# (key, how the server indexes it): registered by `runbooks dev` and the test fixtures.
SEARCH_ATTRIBUTES: list[tuple[SearchAttributeKey[Any], IndexedValueType.ValueType]] = [
    (RUNBOOK, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    (INCIDENT_SEVERITY, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    (INCIDENT_STATUS, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    (ALERT_NAME, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    (ESCALATION_LEVEL, IndexedValueType.INDEXED_VALUE_TYPE_INT),
    (TARGET_NAMESPACE, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    (CLUSTER, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
]
