"""How a command that runs on several nodes shows a node's error beside the others' results: one cell format
(``[CODE] message``), the error's fields under ``-o json``, and one stderr line where results go to stdout."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

import pytest

from cli._output import error_cell, error_row, print_node_error
from cli._targets import _node_rows
from errors import GravenError, NotFound

_GONE = NotFound("no such resource 'x'", kind="x")


def test_an_error_cell_names_its_code_and_message() -> None:
    assert error_cell(_GONE) == "[NOT_FOUND] no such resource 'x'"


def test_an_error_row_is_the_errors_fields_for_json_and_its_cell_for_a_table() -> None:
    assert error_row("cp1", _GONE, "json") == {"node": "cp1", "error": _GONE.to_dict()}
    assert error_row("cp1", _GONE, "table") == {"node": "cp1", "error": "[NOT_FOUND] no such resource 'x'"}


def test_a_node_error_goes_to_stderr_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_node_error("cp1", _GONE)
    out, err = capsys.readouterr()
    assert (out, err) == ("", "cp1: error [NOT_FOUND]: no such resource 'x'\n")


@pytest.mark.parametrize("output", ["table", "json"])
def test_node_rows_keep_each_nodes_items_in_order_and_its_error_as_a_row(output: str) -> None:
    results: list[tuple[str, Sequence[Mapping[str, object]] | GravenError]] = [
        ("cp1", [{"pid": 2}, {"pid": 1}]), ("cp2", _GONE), ("w1", [])]
    rows, failed = _node_rows(argparse.Namespace(output=output), results)
    assert failed
    assert rows == [{"node": "cp1", "pid": 2}, {"node": "cp1", "pid": 1}, error_row("cp2", _GONE, output)]
    by_pid = _node_rows(argparse.Namespace(output=output), results[:1],
                        lambda r: sorted(r, key=lambda item: str(item["pid"])))
    assert by_pid == ([{"node": "cp1", "pid": 1}, {"node": "cp1", "pid": 2}], False)
