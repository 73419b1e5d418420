"""Where audit and trace commands read a log from: an LMDB log directory or an export bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from errors import NotFound, StorageError
from events import (
    Bundle,
    ChainVerifier,
    Event,
    Manifest,
    Seen,
    VerifyReport,
    decode_event,
    iter_events,
    read_bundle,
    verify_bundle,
    verify_since,
)
from pki import load_certificate
from storage import LogReader


@dataclass
class LogSource:
    """A log read whole into memory: (seq, canonical bytes) pairs plus, for a bundle, its manifest."""

    path: Path
    kind: str  # "lmdb" | "bundle"
    raw: list[tuple[int, bytes]]
    bundle: Bundle | None = None

    @property
    def manifest(self) -> Manifest | None:
        return self.bundle.info if self.bundle else None

    def events(self) -> list[Event]:
        if self.bundle is not None:
            start = self.bundle.info.from_seq
            return list(iter_events(self.bundle.events, start))
        return [decode_event(raw, seq=seq) for seq, raw in self.raw]


def log_dir(path: Path) -> Path:
    """Accept a node root (``ROOT/disk/EPHEMERAL/log``), an EPHEMERAL dir, or the LMDB dir itself."""
    for candidate in (path, path / "log", path / "EPHEMERAL" / "log", path / "disk" / "EPHEMERAL" / "log"):
        if (candidate / "data.mdb").exists():
            return candidate
    raise NotFound(f"{path}: no event log found (looked for data.mdb in it, log/, EPHEMERAL/log/, disk/EPHEMERAL/log/)",
                   path=str(path))


def open_source(path: str | Path) -> LogSource:
    p = Path(path)
    if p.is_file():
        with p.open("rb") as f:
            bundle = read_bundle(f)
        start = bundle.info.from_seq
        return LogSource(p, "bundle", list(enumerate(bundle.events, start)), bundle)
    if not p.exists():
        raise NotFound(f"{p}: no such file or directory", path=str(p))
    with LogReader(log_dir(p)) as reader:
        return LogSource(p, "lmdb", list(reader.read_raw()))


def open_events(path: str | Path) -> list[Event]:
    return open_source(path).events()


def verify_source(source: LogSource, ca: x509.Certificate) -> tuple[VerifyReport, Seen]:
    """Verify a whole source; returns the report and what it proves (for --since-export)."""
    if source.bundle is not None:
        report, verifier = verify_bundle(source.bundle, ca)
        return report, Seen.of(report, verifier, source.bundle.info.log_size or None)
    verifier = ChainVerifier(ca)
    report = verifier.feed_all(source.raw)
    return report, Seen.of(report, verifier)


def verify_path(path: str | Path, ca: x509.Certificate, since: str | Path | None = None) -> VerifyReport:
    return verify_path_since(path, ca, since)[0]


def verify_path_since(path: str | Path, ca: x509.Certificate,
                      since: str | Path | None = None) -> tuple[VerifyReport, int | None]:
    """Verify ``path``; with ``since``, also that it extends the latest checkpoint that earlier export saw
    (returns that checkpoint's size, or None when there was none)."""
    source = open_source(path)
    report, seen = verify_source(source, ca)
    if since is None:
        return report, None
    return report, verify_since(verify_source(open_source(since), ca)[1], seen)


def load_ca(path: str | Path) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read CA certificate {path}: {exc.strerror}", path=str(path)) from exc
    return load_certificate(data)
