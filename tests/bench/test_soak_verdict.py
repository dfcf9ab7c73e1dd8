"""The soak's verdict on samples: a kind with a legitimate part that gets nothing through for LOCKOUT_SECONDS
(or for all the time it ran) is flagged as locked out; refusals alongside successes, a slow moment shorter
than that, and kinds without a legitimate part are not."""

from __future__ import annotations

from typing import Any

from bench.soak import LOCKOUT_RULE, LOCKOUT_SECONDS, growth, lockouts, problems

BOTH = ["churn", "http_churn"]


def window(kinds: list[str], seconds: float, outcomes: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {"kinds": kinds, "seconds": seconds, "outcomes": outcomes}


def report(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """A report in which everything else held."""
    return {
        "bystander": {"failures": 0, "lost": 0, "first_failures": []},
        "hostiles": {"outcomes": {}, "cuts": {}},
        "windows": windows,
        "relay": {
            "log_tracebacks": 0,
            "log_errors": [],
            "fds": {"after_quiet": 20, "end": 20},
            "rss_mib": {"after_quiet": 50.0, "end": 60.0},
        },
    }


def test_growth_is_what_each_kind_counted_between_two_snapshots():
    before = {"churn": {"echoed intact": 10, "reset mid-stream": 2}}
    after = {"churn": {"echoed intact": 15, "reset mid-stream": 2}, "http_churn": {"429": 4}}
    assert growth(before, after) == {"churn": {"echoed intact": 5}, "http_churn": {"429": 4}}


def test_kinds_that_get_some_traffic_through_in_every_row_are_not_locked_out():
    windows = [
        window(BOTH, 6, {"churn": {"echoed intact": 40}, "http_churn": {"answered intact": 9}}),
        # Refused most of the time (the per-source rate limit), but some got through: not locked out.
        window(BOTH, 6, {"churn": {"echoed intact": 1}, "http_churn": {"answered intact": 1, "429": 300}}),
    ]
    assert lockouts(windows) == []
    assert problems(report(windows), max_rss_growth=128) == []


def test_a_slow_moment_shorter_than_the_lockout_span_is_not_a_lockout():
    windows = [
        window(BOTH, 6, {"churn": {"echoed intact": 3}, "http_churn": {"answered intact": 4}}),
        window(BOTH, 6, {"churn": {"WSServerHandshakeError": 1}, "http_churn": {"answered intact": 4}}),
        window(BOTH, 6, {"http_churn": {"answered intact": 4}}),
        window(BOTH, 6, {"churn": {"echoed intact": 1}, "http_churn": {"answered intact": 4}}),
    ]
    assert LOCKOUT_SECONDS > 12
    assert lockouts(windows) == []


def test_a_kind_refused_for_the_lockout_span_is_locked_out():
    refused = window(["http_churn"], 6, {"http_churn": {"429": 250}})
    windows = [
        window(["http_churn"], 6, {"http_churn": {"answered intact": 12}}),
        *[refused] * 4,  # 24 s
        window(["http_churn"], 6, {"http_churn": {"answered intact": 3}}),
    ]
    assert lockouts(windows) == [
        "http_churn locked out for 24 s (rows 2-5): no 'answered intact'; saw {'429': 1000}"
    ]
    assert problems(report(windows), max_rss_growth=128) == lockouts(windows)


def test_a_kind_locked_out_until_the_end_of_the_run_is_flagged_too():
    windows = [
        window(["churn"], 6, {"churn": {"echoed intact": 5}}),
        *[window(["churn"], 6, {})] * 4,
    ]
    assert lockouts(windows) == ["churn locked out for 24 s (rows 2-5): no 'echoed intact'; saw nothing"]


def test_a_kind_that_ran_less_long_than_the_span_is_judged_over_all_of_its_time():
    # --each 10: one row per kind; a kind that got nothing through in all its 10 s is locked out.
    windows = [
        window(["http_churn"], 10, {"http_churn": {"429": 900}}),
        window(["churn"], 10, {"churn": {"echoed intact": 30}}),
    ]
    assert lockouts(windows) == [
        "http_churn locked out for 10 s (rows 1-1): no 'answered intact'; saw {'429': 900}"
    ]


def test_kinds_without_a_legitimate_part_are_not_judged():
    # A sender held back by backpressure is not locked out: full_speed is not judged, nor are attackers.
    windows = [window(["slowloris", "full_speed"], 30, {"slowloris": {"cut": 30}})]
    assert lockouts(windows) == []


def test_the_rule_is_spelled_out_with_each_kinds_success():
    assert "http_churn: 'answered intact'" in LOCKOUT_RULE
    assert "churn: 'echoed intact'" in LOCKOUT_RULE
    assert f"{LOCKOUT_SECONDS:g} s" in LOCKOUT_RULE
