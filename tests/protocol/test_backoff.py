"""hyco.protocol.backoff: the SDKs' reconnect table (protocol.md 2.9, 6)."""

from __future__ import annotations

from itertools import islice

import pytest

from hyco.protocol.backoff import RECONNECT_DELAYS, reconnect_delays


def test_default_sequence_then_30_forever() -> None:
    assert list(islice(reconnect_delays(), 10)) == [0, 1, 2, 5, 10, 30, 30, 30, 30, 30]
    assert RECONNECT_DELAYS == (0, 1, 2, 5, 10, 30)


def test_each_generator_starts_over() -> None:
    first = reconnect_delays()
    assert list(islice(first, 3)) == [0, 1, 2]
    assert next(reconnect_delays()) == 0
    assert next(first) == 5


def test_custom_table_repeats_its_last_entry() -> None:
    assert list(islice(reconnect_delays([0.5, 2.0]), 5)) == [0.5, 2.0, 2.0, 2.0, 2.0]
    assert list(islice(reconnect_delays((7,)), 3)) == [7, 7, 7]


def test_empty_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        next(reconnect_delays(()))
