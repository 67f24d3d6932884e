"""The idempotency list is bounded by bytes as well as by count (issue 16): keys are free-form,
and 10,000 keys of 100 characters would push the ConfigMap over the API server's 1 MiB limit."""

from __future__ import annotations

import json

import pytest

from vworkspace.agent.idempotency import (
    MAX_BYTES,
    MAX_KEY_BYTES,
    IdempotencyStore,
    bounded,
    encoded_size,
)
from vworkspace.testing.fakeapi import FakeApi

ONE_MIB = 1024 * 1024


def long_keys(count: int, length: int = 100) -> list[str]:
    return [f"{index:06d}-" + "k" * (length - 7) for index in range(count)]


def test_10000_keys_of_about_100_characters_stay_under_the_object_limit() -> None:
    keys = long_keys(10_000, length=110)
    assert len(json.dumps(keys)) > ONE_MIB  # the arithmetic: a count bound is not enough
    kept = bounded(keys, max_keys=10_000, max_bytes=MAX_BYTES)
    assert len(json.dumps(kept).encode()) <= MAX_BYTES < ONE_MIB
    assert kept == keys[-len(kept) :]  # the newest survive, the oldest are evicted
    assert 6_000 < len(kept) < 10_000


def test_the_count_bound_still_applies_to_short_keys() -> None:
    keys = [f"k{i}" for i in range(20_000)]
    assert bounded(keys, max_keys=10_000, max_bytes=MAX_BYTES) == keys[-10_000:]


@pytest.mark.parametrize("max_bytes", [2, 10, 11, 12, 100, 1000, 4099])
def test_the_byte_bound_is_exact(max_bytes: int) -> None:
    keys = [*long_keys(50, length=10), "ünïcödé-" * 20, "x"]
    kept = bounded(keys, max_keys=1000, max_bytes=max_bytes)
    assert len(json.dumps(kept).encode()) <= max_bytes
    if len(kept) < len(keys):  # one more key would not have fitted
        assert len(json.dumps(keys[-len(kept) - 1 :]).encode()) > max_bytes


def test_sizes_count_json_escapes_not_characters() -> None:
    assert encoded_size("é") == len('"\\u00e9"') + 2
    assert encoded_size('a"b') == len('"a\\"b"') + 2


def test_a_key_longer_than_the_per_key_limit_is_refused() -> None:
    assert IdempotencyStore.problem("k" * MAX_KEY_BYTES) == ""
    assert "longer than 4096 bytes" in IdempotencyStore.problem("k" * (MAX_KEY_BYTES + 1))
    # Escapes count: 700 characters that JSON writes as 6 bytes each.
    assert IdempotencyStore.problem("\u0001" * 700) != ""


def test_a_byte_bound_below_one_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        IdempotencyStore(FakeApi(), namespace="ops", max_bytes=100)
