"""The soak's verdict on samples: a kind with a legitimate part that stops getting through in a window of the
run is flagged as locked out; refusals alongside successes, other kinds and short windows are not."""

from __future__ import annotations

from typing import Any

from bench.soak import LOCKOUT_RULE, growth, lockouts, problems


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


def test_a_kind_whose_successes_grow_in_every_window_is_not_locked_out():
    windows = [
        window(
            ["churn", "http_churn"], 6, {"churn": {"echoed intact": 40}, "http_churn": {"answered intact": 9}}
        ),
        # Refused most of the time (the per-source rate limit), but some got through: not locked out.
        window(
            ["churn", "http_churn"],
            6,
            {"churn": {"echoed intact": 1}, "http_churn": {"answered intact": 1, "429": 300}},
        ),
    ]
    assert lockouts(windows) == []
    assert problems(report(windows), max_rss_growth=128) == []


def test_a_kind_refused_for_a_whole_window_is_locked_out():
    windows = [
        window(["http_churn"], 6, {"http_churn": {"answered intact": 12}}),
        window(["http_churn"], 6, {"http_churn": {"429": 250}}),
        window(["http_churn"], 6, {"http_churn": {"answered intact": 3}}),
    ]
    assert lockouts(windows) == [
        "http_churn locked out in window 2 (6 s): no 'answered intact'; saw {'429': 250}"
    ]
    assert problems(report(windows), max_rss_growth=128) == lockouts(windows)


def test_a_kind_that_saw_nothing_in_a_window_is_locked_out_too():
    windows = [window(["churn", "http_churn"], 6, {"churn": {"echoed intact": 5}})]
    assert lockouts(windows) == ["http_churn locked out in window 1 (6 s): no 'answered intact'; saw nothing"]


def test_kinds_without_a_legitimate_part_and_short_windows_are_not_judged():
    windows = [
        # A sender held back by backpressure for a window is not locked out: full_speed is not judged.
        window(["slowloris", "full_speed"], 6, {"slowloris": {"cut": 30}}),
        window(["churn"], 1.5, {"churn": {"reset mid-stream": 1}}),  # the run's last, partial row
    ]
    assert lockouts(windows) == []


def test_the_rule_is_spelled_out_with_each_kinds_success():
    assert "http_churn: 'answered intact'" in LOCKOUT_RULE
    assert "churn: 'echoed intact'" in LOCKOUT_RULE
