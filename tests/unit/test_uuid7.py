"""domain.ids.uuid7: RFC 9562 layout, time prefix, strict monotonicity within a process."""

from __future__ import annotations

import itertools
import time

import pytest

from domain import ids
from domain.ids import uuid7


def _unix_ms(value: int) -> int:
    return value >> 80


@pytest.fixture
def restore_generator_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that fake the clock must not leave future timestamps behind for later ids."""
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_counter", ids._counter)


def test_version_and_variant_bits_are_v7_rfc9562() -> None:
    for _ in range(1000):
        u = uuid7()
        assert u.version == 7
        assert (u.int >> 62) & 0b11 == 0b10  # RFC 4122/9562 variant


def test_timestamp_prefix_is_the_current_unix_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    # The generator may borrow a few ms ahead when its counter overflows, never fall behind.
    assert before <= _unix_ms(u.int) <= after + 5


def test_ids_are_strictly_increasing_in_generation_order() -> None:
    made = [uuid7() for _ in range(20_000)]
    assert all(a.int < b.int for a, b in itertools.pairwise(made))
    assert [u.bytes for u in made] == sorted(u.bytes for u in made)  # byte order = PG uuid order


@pytest.mark.usefixtures("restore_generator_state")
def test_stays_monotonic_when_the_clock_is_frozen_and_the_counter_overflows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen_ns = (time.time_ns() // 1_000_000 + 10_000) * 1_000_000  # ahead of anything made so far
    monkeypatch.setattr(ids.time, "time_ns", lambda: frozen_ns)
    made = [uuid7() for _ in range(10_000)]  # > 4096 per ms forces the counter to borrow the next ms
    assert all(a.int < b.int for a, b in itertools.pairwise(made))
    assert _unix_ms(made[0].int) == frozen_ns // 1_000_000
    assert _unix_ms(made[-1].int) > frozen_ns // 1_000_000


@pytest.mark.usefixtures("restore_generator_state")
def test_stays_monotonic_when_the_clock_goes_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_000_000_000)  # 1970
    later = [uuid7() for _ in range(100)]
    assert all(first.int < u.int for u in later)
    assert all(a.int < b.int for a, b in itertools.pairwise(later))


def test_random_tail_differs_between_ids() -> None:
    tails = {uuid7().int & ((1 << 62) - 1) for _ in range(1000)}
    assert len(tails) == 1000
