"""The named limits on a config document: each hostile shape is refused early, naming its limit and value."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config
from config.limits import LIMITS, Limits, clip_utf8
from errors import Code, InvalidConfig, LimitExceeded, TooLarge, error_for_code


def laughs(levels: int) -> bytes:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def refusal(data: bytes | str, limits: Limits = LIMITS) -> LimitExceeded:
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as info:
        config.parse_yaml(data, limits)
    assert time.monotonic() - started < 1.0
    return info.value


def test_billion_laughs_is_refused_at_its_first_alias_without_expanding_it():
    exc = refusal(laughs(9))
    assert exc.code is Code.LIMIT_EXCEEDED and exc.details["limit"] == "yaml_aliases"
    assert exc.details["line"] == 2 and "alias" in exc.message and "*l0" in exc.message


def test_an_alias_budget_counts_what_each_alias_expands_to():
    exc = refusal(laughs(9), Limits(yaml_aliases=1000, yaml_nodes=5000))
    assert exc.details["limit"] == "yaml_nodes" and exc.details["max"] == 5000
    tree, _, problems = config.parse_yaml(laughs(2), Limits(yaml_aliases=9))
    assert problems == [] and tree["l1"][0] == ["lol"] * 9


def test_an_anchor_without_alias_is_harmless():
    tree, _, problems = config.parse_yaml(b"a: &x 1\nb: 2\n")
    assert tree == {"a": 1, "b": 2} and problems == []


@pytest.mark.parametrize("doc", [
    b"a: " + b"[" * 990 + b"]" * 990,
    b"".join(b"  " * i + b"k%d:\n" % i for i in range(900)) + b"  " * 900 + b"x\n",
    b"a: " + b"{b: " * 40 + b"1" + b"}" * 40,
])
def test_deep_nesting_is_refused_with_the_depth_not_a_recursion_error(doc):
    exc = refusal(doc)
    assert exc.details == {"limit": "yaml_depth", "value": 33, "max": 32, "line": exc.details["line"]}


def test_too_many_nodes_is_refused():
    exc = refusal(b"a: [" + b"0," * 30_000 + b"0]")
    assert exc.details["limit"] == "yaml_nodes" and exc.details["value"] == LIMITS.yaml_nodes + 1


def test_a_document_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(TooLarge) as info:
        config.load(b"#" * (LIMITS.config_bytes + 1))
    assert info.value.code is Code.TOO_LARGE
    assert info.value.details == {"limit": "config_bytes", "value": LIMITS.config_bytes + 1,
                                  "max": LIMITS.config_bytes}


def test_the_time_budget_stops_a_slow_parse():
    exc = refusal(b"a: [" + b"0," * 5000 + b"0]", Limits(parse_seconds=0.0))
    assert exc.details["limit"] == "parse_seconds"


def test_only_the_first_errors_are_reported_with_a_count_of_the_rest(text):
    doc = text + "".join(f"unknown{i}: {i}\n" for i in range(300))
    with pytest.raises(InvalidConfig) as info:
        config.load(doc)
    exc = info.value
    assert len(exc.details["errors"]) == LIMITS.reported_errors
    assert exc.details["more_errors"] == 300 - LIMITS.reported_errors
    assert exc.message.splitlines()[-1] == "  - and 280 more (limit reported_errors = 20)"


def test_a_hostile_key_is_clipped_in_the_report(text):
    with pytest.raises(InvalidConfig) as info:
        config.load(text + "? " + "k" * 100_000 + "\n: 1\n")
    assert len(info.value.message) < 1000 and "(clipped)" in info.value.message


def test_limit_errors_round_trip_through_their_code():
    exc = error_for_code("TOO_LARGE", "big", {"limit": "config_bytes", "value": 2, "max": 1})
    assert isinstance(exc, TooLarge) and exc.limit == "config_bytes" and exc.details["max"] == 1


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=400))
def test_clip_utf8_fits_and_keeps_a_prefix(text, size):
    out = clip_utf8(text, size)
    assert len(out.encode()) <= max(size, len(" …(clipped)".encode()))
    if out != text:
        assert text.startswith(out.removesuffix(" …(clipped)"))


def test_a_real_config_is_far_inside_the_limits(text):
    assert len(text.encode()) * 20 < LIMITS.config_bytes
    config.load(text)


def test_every_limit_is_described_for_operators():
    from config.limits import WHAT

    assert set(WHAT) == set(Limits.__struct_fields__)
    text = (Path(__file__).resolve().parents[2] / "specs" / "limits.md").read_text()
    assert all(f"`{name}`" in text for name in WHAT)
