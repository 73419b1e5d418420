"""``cli._output.command``, which every gravenctl command group builds its commands with: the help and
description, the flags in the order given, ``-o`` last (or none), and what the command runs with its defaults."""

from __future__ import annotations

import argparse

import pytest

from cli._output import command


def _run(args: argparse.Namespace) -> int:
    return 0


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true")


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true")


def _group() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="gravenctl")
    return parser, parser.add_subparsers(dest="command", required=True)


def test_a_command_has_its_texts_its_flags_in_order_then_output_and_runs_its_function() -> None:
    parser, subs = _group()
    p = command(subs, "leave", _run, "leave the cluster", "The node leaves.", _wait, _force, action="leave")
    p.add_argument("member", metavar="ID")
    assert [a.option_strings[-1] for a in p._actions if a.option_strings] == ["--help", "--wait", "--force",
                                                                              "--output"]
    assert p.description == "The node leaves."
    assert "leave the cluster" in parser.format_help()
    args = parser.parse_args(["leave", "--force", "-o", "json", "7"])
    assert (args.func, args.action, args.force, args.wait, args.output, args.member) == (
        _run, "leave", True, False, "json", "7")
    assert parser.parse_args(["leave", "7"]).output == "table"


def test_a_command_without_output_has_no_o_flag() -> None:
    parser, subs = _group()
    command(subs, "merge", _run, "merge", "Merge.", output=False)
    assert not hasattr(parser.parse_args(["merge"]), "output")
    with pytest.raises(SystemExit):
        parser.parse_args(["merge", "-o", "json"])
