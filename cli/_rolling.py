"""``gravenctl upgrade --rolling``: node by node, the next only after the previous is Running and committed on
the image's version; stops at the first node that falls back or fails."""

from __future__ import annotations

import argparse
import functools
import sys
import time

from api import GravenClient, StatusInfo, VersionInfo
from errors import GravenError, InvalidRequest, NotFound

from ._output import print_json, table
from ._remote import connect, targets
from ._targets import _Progress, wait_for
from ._wait import Outcome


# -- rolling upgrade -------------------------------------------------------------------------------------
def _image_version(source: str) -> str | None:
    """The version a local image file claims (what every node must run afterwards); None for a URL."""
    if "://" in source:
        return None
    import image

    try:
        return str(image.inspect(source).manifest.version)
    except GravenError:
        raise
    except OSError as exc:
        raise NotFound(f"{source}: cannot read the image: {exc.strerror}", path=source) from None


def _version_cell(v: VersionInfo | None) -> str | None:
    return f"{v['version']} ({v['slot'] or '-'})" if v else None


def _settled(client: GravenClient, deadline: float, boot_not: str | None) -> StatusInfo | None:
    """The node's status once it is Running and ready (its boot committed) in a boot other than ``boot_not``,
    or its last status (None if unreachable) at ``deadline``."""
    last: StatusInfo | None = None
    while True:
        try:
            last = client.status()
            if last["stage"] == "running" and last["ready"] and last["boot_id"] != boot_not:
                return last
        except GravenError:
            pass
        if time.monotonic() >= deadline:
            return last
        time.sleep(0.2)


def _rolling_upgrade(args: argparse.Namespace) -> int:
    """``upgrade --rolling``: node by node, stop at the first that falls back or fails; one row per node."""
    if args.stage:
        raise InvalidRequest("--rolling boots each node into the new image; it does not go with --stage")
    nodes = targets(args)
    want = _image_version(args.image)
    progress = _Progress(nodes)
    rows: list[dict[str, object]] = []
    stopped_at: str | None = None
    for node in nodes:
        row: dict[str, object] = {"node": node, "outcome": "untouched", "before": None, "after": None,
                               "elapsed_s": None, "message": None}
        rows.append(row)
        if stopped_at is not None:  # only read: it keeps what it runs
            try:
                with connect(args, node, timeout=5) as client:
                    row["before"] = row["after"] = _version_cell(client.version())
            except GravenError as exc:
                row["message"] = f"not reached: [{exc.code.name}] {exc.message}"
            row["message"] = row["message"] or f"not upgraded: the rollout stopped at {stopped_at}"
            continue
        started = time.monotonic()
        deadline = started + args.timeout
        say = functools.partial(progress.line, node)
        before: VersionInfo | None = None
        try:
            with connect(args, node) as client:
                before = client.version()
                row["before"] = _version_cell(before)
                say(f"upgrading from {row['before']}" + (f" to {want}" if want else ""))
                accepted = client.upgrade(args.image)
                say(f"{accepted.sequence} accepted (request at seq {accepted.seq})")
                outcome = wait_for(client, accepted, args.timeout, say, started)
                st = _settled(client, deadline, before["boot_id"] if outcome.ok else None)
        except GravenError as exc:
            outcome, st = Outcome(False, f"[{exc.code.name}] {exc.message}"), None
        row["elapsed_s"] = round(time.monotonic() - started, 1)
        if st is not None:
            row["after"] = f"{st['version']} ({st['slot'] or '-'})"
        if outcome.ok and st is not None and st["stage"] == "running" and st["ready"] \
                and (want is None or st["version"] == want):
            row.update(outcome="upgraded", message=outcome.message)
            say(f"upgraded: Running and committed on {row['after']}")
            continue
        if outcome.ok:
            why = "not Running and ready in time" if st is None or not (st["stage"] == "running" and st["ready"]) \
                else f"it runs {st['version']}, not {want}"
            row.update(outcome="failed", message=f"{outcome.message}; but {why}")
        elif "fell back" in outcome.message or (st is not None and st.get("last_fallback") is not None
                                                 and before is not None and st["version"] == before["version"]):
            fb = st.get("last_fallback") if st else None
            row.update(outcome="fell back", message=outcome.message
                       + (f"; now {'Running' if st and st['ready'] else 'booting'} on {row['after']}"
                          if st else "") + (f" (last_fallback {fb['from_slot']}->{fb['to_slot']})" if fb else ""))
        else:
            row.update(outcome="failed", message=outcome.message)
        stopped_at = node
        say(f"the rollout stops here ({row['outcome']}): {row['message']}")
    if args.output == "json":
        print_json({"rolling": True, "image": args.image, "version": want, "stopped_at": stopped_at,
                    "nodes": rows})
    else:
        table([{**r, "outcome": r["outcome"].upper() if r["outcome"] in ("failed", "fell back") else r["outcome"],
                "elapsed": f"{r['elapsed_s']:.1f}s" if r["elapsed_s"] is not None else None} for r in rows],
              ("node", "outcome", "before", "after", "elapsed", "message"))
        if stopped_at is not None:
            sys.stderr.write(f"rolling upgrade stopped at {stopped_at}; "
                             f"{sum(r['outcome'] == 'untouched' for r in rows)} node(s) left untouched\n")
    return 1 if stopped_at is not None else 0
