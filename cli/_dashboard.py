"""``gravenctl dashboard``: a live terminal view of one or several nodes, fed by their Events streams.

Each node has a watcher thread: one MachineStatus when it (re)connects, then the Events stream folded into a
``NodeBoard``. A node that reboots shows offline, then comes back on its own; one that never answered shows
unreachable, and the dashboard keeps running."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Protocol

from rich.console import RenderableType

from errors import GravenError

from ._board import NodeBoard
from ._output import add_output_flag, print_json, table
from ._remote import connect, targets

RETRY_S = 1.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dashboard", help="a live view of nodes: stage, readiness, slot, running sequence, recent events",
        description="A live terminal view of the nodes (-n/-e or the context's): stage, readiness, slot and version, "
                    "the running sequence with its phase progress, the last fallback, recent events and log size, "
                    "updated from each node's Events stream. A rebooting node shows offline, then back; an "
                    "unreachable one shows unreachable. Ctrl-C ends it. --once prints one snapshot (-o json).")
    p.add_argument("--once", action="store_true", help="print one snapshot once every node answered or failed")
    p.add_argument("--refresh", type=float, default=4.0, metavar="HZ", help="screen refreshes per second")
    add_output_flag(p)
    p.set_defaults(func=_dashboard)


class _Closing(Protocol):
    def close(self) -> None: ...


class _Watchers:
    """The watcher threads and their open clients: stopping closes every channel, which ends the streams they
    block in (a thread left in a grpc stream can hold up the interpreter's exit)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._clients: set[_Closing] = set()
        self._threads: list[threading.Thread] = []

    def start(self, args: argparse.Namespace, board: NodeBoard, first: threading.Event) -> None:
        t = threading.Thread(target=_watch, args=(args, board, self, first), daemon=True,
                             name=f"watch {board.endpoint}")
        self._threads.append(t)
        t.start()

    def opened(self, client: _Closing) -> None:
        with self._lock:
            self._clients.add(client)

    def closed(self, client: _Closing) -> None:
        with self._lock:
            self._clients.discard(client)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        for t in self._threads:
            t.join(timeout=2.0)


def _watch(args: argparse.Namespace, board: NodeBoard, watchers: _Watchers, first: threading.Event) -> None:
    stop = watchers.stop
    while not stop.is_set():
        try:
            with connect(args, board.endpoint) as client:
                watchers.opened(client)
                if stop.is_set():
                    return
                board.status(client.status())
                first.set()

                def lost(error: GravenError) -> bool:
                    board.lost(error.message)
                    return not stop.is_set()

                def pause(seconds: float) -> None:
                    stop.wait(seconds)

                for e in client.follow(board.next_seq, tail=None if board.recent else 6, retry_for=1e9,
                                       on_disconnect=lost, sleep=pause):
                    if stop.is_set():
                        return
                    if board.link != "online":
                        board.status(client.status())
                    board.event(e)
            watchers.closed(client)
        except GravenError as exc:
            if stop.is_set():
                return
            board.lost(exc.message, unreachable=board.link in ("connecting", "unreachable"))
            first.set()
        except Exception:
            if stop.is_set():  # the channel was closed under the stream on the way out
                return
            raise
        stop.wait(RETRY_S)


def _render(boards: list[NodeBoard]) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    t = Table(title=f"graven dashboard  {time.strftime('%H:%M:%S')}", expand=True)
    columns = list(boards[0].row())
    for c in columns:
        t.add_column(c.upper(), overflow="fold")
    colors = {"online": "green", "offline": "yellow", "unreachable": "red", "connecting": "dim"}
    for b in boards:
        row = b.row()
        row["link"] = f"[{colors.get(b.link, 'white')}]{b.link}[/]"
        t.add_row(*[row[c] for c in columns])
    panels = [Panel("\n".join(b.recent) or (b.error or "no events yet"),
                    title=f"{b.endpoint}: {b.error}" if b.error else f"{b.endpoint}: recent events", expand=True)
              for b in boards]
    return Group(t, *panels)


def _dashboard(args: argparse.Namespace) -> int:
    boards = [NodeBoard(node) for node in targets(args)]
    watchers = _Watchers()
    firsts = [threading.Event() for _ in boards]
    for b, f in zip(boards, firsts, strict=True):
        watchers.start(args, b, f)
    try:
        if args.once:
            deadline = time.monotonic() + 15
            for f in firsts:
                f.wait(max(0.0, deadline - time.monotonic()))
            time.sleep(0.3)  # the first batch of events after the status
            if args.output == "json":
                print_json([{**b.row(), "error": b.error or None, "recent": list(b.recent)} for b in boards])
            else:
                table([b.row() for b in boards], list(boards[0].row()))
            return 0 if all(b.link == "online" for b in boards) else 1
        from rich.live import Live

        # Ctrl-C (or SIGTERM) ends the loop between two frames instead of raising wherever the main thread is
        ended = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: ended.set())
        with Live(_render(boards), refresh_per_second=args.refresh, screen=False) as live:
            while not ended.wait(1 / max(args.refresh, 0.5)):
                live.update(_render(boards))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        watchers.close()
