"""PagerDuty fixtures: the Events API v2 stand-in (HTTPS, its own CA) with two services, "LLM Platform"
(the on-call's) and "Senior SRE" (an escalation role's), one per test module; `pd` empties it first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from standins.pagerduty import PagerDutyStandIn


@pytest.fixture(scope="module")
def pagerduty_standin() -> Iterator[PagerDutyStandIn]:
    server = PagerDutyStandIn(integrations=("LLM Platform", "Senior SRE")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pd(pagerduty_standin: PagerDutyStandIn) -> PagerDutyStandIn:
    """The module's stand-in, with no event, alert or request knob left from an earlier test."""
    pagerduty_standin.reset()
    return pagerduty_standin
