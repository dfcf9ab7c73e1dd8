"""Example budgets for the fuzz properties: small in CI, larger on request.

``HYCO_FUZZ_EXAMPLES=N`` runs every fuzz property with N examples (the default is each property's CI budget),
for example ``HYCO_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/protocol/test_fuzz.py
tests/server/test_frontdoor_fuzz.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per property for a long run, or None to use each property's CI budget.
_REQUESTED = int(os.environ.get("HYCO_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for one fuzz property: ``ci_examples`` in CI, ``HYCO_FUZZ_EXAMPLES`` when set.

    No deadline (the machine is shared; a slow example is not a failure) and no database writes in CI
    beyond hypothesis' default, so a found crash replays on the next run.
    """
    return settings(
        max_examples=_REQUESTED or ci_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
