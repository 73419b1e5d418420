"""Running a command on every target node: progress lines, one result or error per node, tables or JSON."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from api import Accepted, GravenClient
from errors import GravenError

from ._output import error_row, print_json, table
from ._remote import connect, fanout, targets
from ._wait import Outcome, Waiter

__all__ = ["wait_back", "wait_for"]

T = TypeVar("T")
R = TypeVar("R")




# -- running on every target -----------------------------------------------------------------------------
class _Progress:
    """Progress lines on stderr: ``[  12.3s] node: text`` (the node only when there are several)."""

    def __init__(self, nodes: Sequence[str]) -> None:
        self.start = time.monotonic()
        self._several = len(nodes) > 1
        self._lock = threading.Lock()

    def line(self, node: str, text: str) -> None:
        prefix = f"{node}: " if self._several else ""
        with self._lock:
            sys.stderr.write(f"[{time.monotonic() - self.start:7.1f}s] {prefix}{text}\n")
            sys.stderr.flush()


def _on_nodes(args: argparse.Namespace, fn: Callable[[GravenClient], T]) -> list[tuple[str, T | GravenError]]:
    """``fn(client)`` on every target; with one target its error is raised, with several it is its row."""
    nodes = targets(args)

    def one(node: str) -> T:
        with connect(args, node) as client:
            return fn(client)

    results = fanout(nodes, one)
    if len(results) == 1 and isinstance(results[0][1], GravenError):
        raise results[0][1]
    return results


def _node_rows(args: argparse.Namespace, results: Sequence[tuple[str, Sequence[Mapping[str, object]] | GravenError]],
               order: Callable[[Sequence[Mapping[str, object]]], Sequence[Mapping[str, object]]] = lambda r: r,
               ) -> tuple[list[dict[str, object]], bool]:
    """The rows of every node's list, each with its ``node``, in ``order``; a node's error as its row. And whether
    any node failed."""
    rows: list[dict[str, object]] = []
    failed = False
    for node, r in results:
        if isinstance(r, GravenError):
            failed = True
            rows.append(error_row(node, r, args.output))
            continue
        rows += [{"node": node, **item} for item in order(r)]
    return rows, failed


def _emit(args: argparse.Namespace, results: Sequence[tuple[str, R | GravenError]], columns: Sequence[str],
          row: Callable[[str, R], Mapping[str, object]], as_json: Callable[[str, R], object]) -> int:
    failed = any(isinstance(r, GravenError) for _, r in results)
    if args.output == "json":
        items = [error_row(n, r, "json") if isinstance(r, GravenError) else as_json(n, r) for n, r in results]
        print_json(items[0] if len(items) == 1 else items)
    else:
        rows = [error_row(n, r, "table") if isinstance(r, GravenError) else row(n, r) for n, r in results]
        table(rows, [*columns, "error"] if failed else columns)
    return 1 if failed else 0


def wait_for(client: GravenClient, accepted: Accepted, timeout: float, log: Callable[[str], None],
             started: float | None = None) -> Outcome:
    """Follow ``client``'s events from the request on until its outcome; never past ``timeout`` seconds from
    ``started`` (default: now)."""
    deadline = (started if started is not None else time.monotonic()) + timeout
    waiter = Waiter(accepted.sequence, accepted.seq)
    down = [False]

    def on_disconnect(error: GravenError) -> bool:
        if waiter.disconnected() is not None:
            return False
        if not down[0]:
            down[0] = True
            log(f"lost the node ({error.message}); reconnecting")
        return True

    try:
        for event in client.follow(accepted.seq, deadline=deadline, retry_for=max(1.0, deadline - time.monotonic()),
                                   on_disconnect=on_disconnect):
            if down[0]:
                down[0] = False
                log(f"reconnected at seq {event.seq}")
            for line in waiter.feed(event):
                log(line)
            if waiter.outcome is not None:
                break
    except GravenError as exc:
        outcome = waiter.disconnected()
        if outcome is None:
            outcome = Outcome(False, f"{accepted.sequence}: [{exc.code.name}] {exc.message}; last seen: {waiter.last}")
            log(f"FAILED: {outcome.message}")
        return outcome
    if waiter.outcome is None:
        log(f"FAILED: {waiter.timed_out(timeout).message}")
    assert waiter.outcome is not None
    return waiter.outcome


def wait_back(client: GravenClient, deadline: float, log: Callable[[str], None]) -> Outcome:
    """After ``reset --reboot``: until the node answers again, with this cluster's certificates (STATE kept) or
    in maintenance, where it shows a new self-signed certificate (STATE wiped: it has no identity any more)."""
    log("waiting for the node to boot again")
    while time.monotonic() < deadline:
        for how in ("mtls", "maintenance"):
            try:
                if how == "mtls":
                    st = client.status()
                else:
                    with GravenClient.insecure(client.endpoint, quiet=True, timeout=2.0) as bare:
                        st = bare.status()
            except GravenError:
                continue
            slot = f"slot {st.get('slot') or '-'}, version {st.get('version') or '?'}"
            where = "in maintenance (apply a config to configure it again)" if st.get("stage") == "maintenance" \
                else f"in stage {st.get('stage')}"
            return Outcome(True, f"the node is up again {where}: {slot}")
        time.sleep(0.25)
    return Outcome(False, "the node did not answer again after the reset before the timeout")
