"""--shard i/n: n parallel pipeline jobs verify every selected server exactly once, the same way on every run."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exbe.errors import ConfigError
from exbe.shard import parse_shard, shard

PINNED_SHARDS = [["exch01", "exch07"], ["exch02", "exch04", "exch06", "exch08"], ["exch03", "exch05"]]

server_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True), unique=True, max_size=60)


@given(servers=server_names, count=st.integers(min_value=1, max_value=20))
def test_shards_one_to_n_are_disjoint_and_cover_the_inventory(servers: list[str], count: int) -> None:
    parts = [shard(servers, index, count) for index in range(1, count + 1)]
    together = [name for part in parts for name in part]
    assert sorted(together) == sorted(servers)
    assert len(together) == len(set(together))


@given(servers=server_names, count=st.integers(min_value=1, max_value=20), seed=st.integers())
def test_a_server_stays_in_its_shard_whatever_the_inventory_order(servers: list[str], count: int,
                                                                 seed: int) -> None:
    shuffled = list(servers)
    random.Random(seed).shuffle(shuffled)
    for index in range(1, count + 1):
        assert sorted(shard(servers, index, count)) == sorted(shard(shuffled, index, count))


@given(servers=server_names, extra=st.from_regex(r"new[0-9]{1,3}", fullmatch=True),
       count=st.integers(min_value=1, max_value=20))
def test_adding_a_server_moves_no_other_server(servers: list[str], extra: str, count: int) -> None:
    grown = [name for name in servers if name != extra] + [extra]
    for index in range(1, count + 1):
        assert [n for n in shard(grown, index, count) if n != extra] == [n for n in shard(servers, index, count)
                                                                         if n != extra]


def test_shards_are_the_same_on_every_machine() -> None:
    # Pinned: a hash of the name (sha256), not Python's per-process hash(), decides the shard.
    fleet = [f"exch{n:02d}" for n in range(1, 9)]
    assert [shard(fleet, index, 3) for index in (1, 2, 3)] == PINNED_SHARDS


def test_one_shard_is_the_whole_selection_in_order() -> None:
    assert shard(["exch02", "exch01", "exch03"], 1, 1) == ["exch02", "exch01", "exch03"]


@pytest.mark.parametrize("spec, expected", [("1/1", (1, 1)), ("2/5", (2, 5)), (" 3 / 4 ", (3, 4)), ("20/20", (20, 20))])
def test_shard_specs_read_as_index_of_total(spec: str, expected: tuple[int, int]) -> None:
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec, says", [
    ("0/3", "between 1 and 3"),
    ("4/3", "between 1 and 3"),
    ("1/0", "at least 1"),
    ("x/y", "i/n with whole numbers"),
    ("2", "i/n with whole numbers"),
    ("", "i/n with whole numbers"),
    ("-1/3", "i/n with whole numbers"),
])
def test_bad_shard_specs_are_refused_with_what_is_expected(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        parse_shard(spec)
    assert isinstance(refused.value, ConfigError) and refused.value.exit_code == 2
    assert repr(spec) in str(refused.value)
