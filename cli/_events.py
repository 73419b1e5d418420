"""``gravenctl events``: past events, or follow (-f) new ones across reboots, as a table or JSON lines."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time

from api import GravenClient
from errors import GravenError
from events import Event

from ._audit import summarize
from ._output import print_node_error
from ._remote import connect, targets
from ._targets import _on_nodes

RETRY_FOR = 600.0  # events -f: how long a node may stay unreachable before giving up




# -- events ----------------------------------------------------------------------------------------------
def _ts(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _event_row(node: str, e: Event) -> dict[str, object]:
    return {"node": node, "seq": e.seq, "time": _ts(e.time_ns), "kind": e.kind, "actor": str(e.actor),
            "details": summarize(e.payload)}


class _EventPrinter:
    """Rows as they come: fixed-width columns (or one JSON object per line), safe across threads."""

    def __init__(self, output: str, several: bool) -> None:
        self.output = output
        self.several = several
        self._lock = threading.Lock()
        self._header = False

    def __call__(self, node: str, e: Event) -> None:
        with self._lock:
            if self.output == "json":
                sys.stdout.write(json.dumps({"node": node, **e.to_json()}, sort_keys=True) + "\n")
            else:
                if not self._header:
                    self._header = True
                    self._write({"node": "NODE", "seq": "SEQ", "time": "TIME", "kind": "KIND", "actor": "ACTOR",
                                 "details": "DETAILS"})
                self._write(_event_row(node, e))
            sys.stdout.flush()

    def _write(self, r: dict[str, object]) -> None:
        node = f"{r['node']:<21} " if self.several else ""
        line = f"{node}{r['seq']!s:>7}  {r['time']:<24} {r['kind']:<18} {r['actor']:<24} {r['details']}"
        sys.stdout.write(line.rstrip() + "\n")


def _events(args: argparse.Namespace) -> int:
    nodes = targets(args)
    printer = _EventPrinter(args.output, len(nodes) > 1)
    kinds = list(args.kind)

    if not args.follow:
        results = _on_nodes(args, lambda c: list(c.events(since=args.since, tail=args.tail, kinds=kinds,
                                                          actor=args.actor)))
        failed = False
        for node, r in results:
            if isinstance(r, GravenError):
                failed = True
                print_node_error(node, r)
                continue
            for e in r:
                printer(node, e)
        return 1 if failed else 0

    deadline = None if args.timeout is None else time.monotonic() + args.timeout

    def follow(client: GravenClient) -> int:
        def lost(error: GravenError) -> bool:
            sys.stderr.write(f"{client.endpoint}: lost the stream ({error.message}); reconnecting\n")
            return True

        for e in client.follow(args.since, tail=args.tail, kinds=kinds, actor=args.actor, deadline=deadline,
                               retry_for=RETRY_FOR, on_disconnect=lost):
            printer(client.endpoint, e)
        return 0

    if len(nodes) == 1:
        with connect(args, nodes[0]) as client:
            return follow(client)
    errors: list[str] = []

    def run(node: str) -> None:
        try:
            with connect(args, node) as client:
                follow(client)
        except GravenError as exc:
            errors.append(node)
            print_node_error(node, exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    return 1 if errors else 0
