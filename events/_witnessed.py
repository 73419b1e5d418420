"""What nodes and witnesses write to etcd (``specs/event-log.md`` §13), and the auditor's check of a log against
the checkpoints witnesses cosigned. Pure: JSON in, JSON out; the etcd adapter lives in ``node._witness``.

- ``/graven/witness/<origin>/checkpoint``: a ``Published`` checkpoint, written by the node whose log it is;
- ``/graven/witness/<origin>/cosigned/<witness name>``: a ``Cosigned`` one, written by that witness.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from errors import InvalidRequest, TamperedLog, UntrustedKey, VerificationError
from pki import cert_public_raw, cert_subject, load_certificate, verify_log_certificate

from ._checkpoint import Checkpoint, verify_note
from ._since import Seen, check_extends
from ._witness import Witnessed, origin_of_cert, verify_cosignature

__all__ = [
    "COSIGNED_FORMAT",
    "PREFIX",
    "PUBLISHED_FORMAT",
    "WITNESSED_FORMAT",
    "WITNESS_UNIT",
    "Cosigned",
    "Published",
    "WitnessRecords",
    "WitnessRow",
    "checkpoint_key",
    "cosigned_key",
    "verify_against_witnesses",
    "verify_witness_certificate",
    "witness_name",
]

PREFIX = "/graven/witness/"
PUBLISHED_FORMAT = "graven-witness-checkpoint/1"
COSIGNED_FORMAT = "graven-witness-cosigned/1"
WITNESSED_FORMAT = "graven-witnessed/1"
WITNESS_UNIT = "graven-witness"


def checkpoint_key(origin: str) -> bytes:
    return f"{PREFIX}{origin}/checkpoint".encode()


def cosigned_key(origin: str, witness: str) -> bytes:
    return f"{PREFIX}{origin}/cosigned/{witness}".encode()


def witness_name(cert: x509.Certificate) -> str:
    return f"graven-witness/{cert_subject(cert)[0]}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not base64: {exc}") from None


class _PublishedDoc(msgspec.Struct):
    """A published checkpoint as JSON holds it (the certificate in base64, the proofs' hashes in hex)."""

    origin: str
    note: str
    cert: str
    published_ns: int
    proofs: dict[int, list[str]]


class _CosignedDoc(msgspec.Struct):
    """A cosigned checkpoint as JSON holds it (certificates in base64, the root in hex)."""

    origin: str
    witness: str
    witness_cert: str
    log_cert: str
    note: str
    size: int
    root: str
    timestamp: int


D = TypeVar("D", bound=msgspec.Struct)


def _load(raw: bytes | str | Mapping[str, object], doc_type: type[D], fmt: str | None, what: str) -> D:
    """``raw`` (JSON, or a map already parsed) as ``doc_type``; ``fmt``: the ``format`` it must name (None: any)."""
    doc: object = raw
    if not isinstance(raw, Mapping):
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, Mapping) or (fmt is not None and doc.get("format") != fmt):
        raise InvalidRequest(f"{what} is not a {fmt} record")
    try:
        return msgspec.convert(dict(doc), doc_type, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{what} is malformed: {exc}") from None


@dataclass(frozen=True)
class Published:
    """A node's latest checkpoint note, its log certificate, and consistency proofs to it from earlier sizes (the
    sizes its witnesses last cosigned, and the checkpoint it published before)."""

    origin: str
    note: str
    cert: bytes  # DER of the log certificate whose key signed the note
    proofs: Mapping[int, Sequence[bytes]]
    published_ns: int

    def to_json(self) -> bytes:
        return json.dumps({"format": PUBLISHED_FORMAT, "origin": self.origin, "note": self.note,
                           "cert": _b64(self.cert), "published_ns": self.published_ns,
                           "proofs": {str(s): [h.hex() for h in p] for s, p in sorted(self.proofs.items())}},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Published:
        doc = _load(raw, _PublishedDoc, PUBLISHED_FORMAT, "a published checkpoint")
        try:
            proofs = {s: [bytes.fromhex(h) for h in p] for s, p in doc.proofs.items()}
        except ValueError as exc:
            raise InvalidRequest(f"a published checkpoint is malformed: {exc!r}") from None
        return cls(doc.origin, doc.note, _unb64(doc.cert, "its certificate"), proofs, doc.published_ns)


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint a witness accepted: the note with the log's signature and the witness's cosignature, the
    witness's certificate, and the log certificate that signed the note."""

    origin: str
    witness: str
    witness_cert: bytes  # DER, OU=graven-witness
    log_cert: bytes  # DER, OU=graven-log
    note: str
    size: int
    root: bytes
    timestamp: int

    @classmethod
    def of(cls, held: Witnessed, witness: str, witness_cert: bytes, log_cert: bytes) -> Cosigned:
        return cls(held.origin, witness, witness_cert, log_cert, held.note, held.size, held.root, held.timestamp)

    def to_dict(self) -> dict[str, object]:
        return {"format": COSIGNED_FORMAT, "origin": self.origin, "witness": self.witness,
                "witness_cert": _b64(self.witness_cert), "log_cert": _b64(self.log_cert), "note": self.note,
                "size": self.size, "root": self.root.hex(), "timestamp": self.timestamp}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, object]) -> Cosigned:
        """A cosigned checkpoint from its JSON, or from the map a witness records file holds (no format check)."""
        doc = _load(raw, _CosignedDoc, None if isinstance(raw, Mapping) else COSIGNED_FORMAT, "a cosigned checkpoint")
        try:
            root = bytes.fromhex(doc.root)
        except ValueError as exc:
            raise InvalidRequest(f"a cosigned checkpoint is malformed: {exc!r}") from None
        return cls(doc.origin, doc.witness, _unb64(doc.witness_cert, "a witness certificate"),
                   _unb64(doc.log_cert, "a log certificate"), doc.note, doc.size, root, doc.timestamp)

    def held(self) -> Witnessed:
        return Witnessed(self.origin, self.size, self.root, self.note, self.timestamp)


def verify_witness_certificate(cert: x509.Certificate, ca: x509.Certificate) -> bytes:
    """The raw key of a witness certificate issued directly by ``ca`` (``OU=graven-witness``)."""
    try:
        cert.verify_directly_issued_by(ca)
        units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
        public = cert_public_raw(cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise UntrustedKey(f"witness certificate {cert_subject(cert)[0]!r} was not issued by the CA ({exc})") from None
    if WITNESS_UNIT not in units:
        raise UntrustedKey(f"certificate {cert_subject(cert)[0]!r} is not a witness certificate")
    return public


def verify_cosigned(entry: Cosigned, ca: x509.Certificate) -> Checkpoint:
    """The checkpoint of ``entry`` when its witness certificate, cosignature, log certificate and log signature
    all verify with ``ca``; else ``VerificationError`` saying which."""
    wcert = load_certificate(entry.witness_cert)
    wkey = verify_witness_certificate(wcert, ca)
    name = witness_name(wcert)
    if name != entry.witness:
        raise UntrustedKey(f"the cosignature of {entry.origin} size {entry.size} names {entry.witness}, its "
                           f"certificate is {name}'s")
    cp, _ = verify_cosignature(entry.note, name, wkey)
    lcert = load_certificate(entry.log_cert)
    lkey = verify_log_certificate(lcert, ca)
    if origin_of_cert(lcert) != cp.origin:
        raise UntrustedKey(f"the log certificate of a {cp.origin} checkpoint is {origin_of_cert(lcert)}'s")
    verify_note(entry.note, lkey)
    if (cp.origin, cp.size, cp.root) != (entry.origin, entry.size, entry.root):
        raise VerificationError(f"the record of {entry.origin} size {entry.size} does not match its note")
    return cp


class WitnessRow(TypedDict):
    """One cosigned checkpoint a log was checked against."""

    witness: str
    origin: str
    size: int
    root: str  # hex
    timestamp: int  # when the witness cosigned it (Unix seconds)
    seq: int


class WitnessRecords(msgspec.Struct, kw_only=True):
    """The witness records under ``/graven/witness/`` as ``gravenctl audit witnessed`` prints and writes them: each
    node's published checkpoint and each witness's cosigned one, as the JSON objects etcd holds (passed on as they
    are: ``Published`` / ``Cosigned`` read them)."""

    format: str = WITNESSED_FORMAT
    published: list[dict[str, object]] = msgspec.field(default_factory=list)
    cosigned: list[dict[str, object]] = msgspec.field(default_factory=list)

    @classmethod
    def of(cls, kvs: Iterable[tuple[bytes, bytes]]) -> WitnessRecords:
        """From etcd's keys and values under the prefix (a value that is not a JSON object is left out)."""
        out = cls()
        for key, value in kvs:
            try:
                doc = json.loads(value)
            except ValueError:
                continue
            if isinstance(doc, dict):
                (out.published if key.endswith(b"/checkpoint") else out.cosigned).append(doc)
        return out

    @classmethod
    def from_json(cls, doc: object, what: str) -> WitnessRecords:
        """``doc`` (parsed JSON) as records; ``InvalidRequest`` naming ``what`` and the field when malformed."""
        if not isinstance(doc, dict) or doc.get("format") != WITNESSED_FORMAT:
            raise InvalidRequest(f"{what} is not a {WITNESSED_FORMAT} record")
        try:
            return msgspec.convert(doc, cls)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"{what}: malformed witness records: {exc}") from None

    def only(self, origin: str | None) -> WitnessRecords:
        """The records of ``origin`` alone (all of them for None)."""
        if origin is None:
            return self
        return WitnessRecords(published=[d for d in self.published if d.get("origin") == origin],
                              cosigned=[d for d in self.cosigned if d.get("origin") == origin])

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        return out


def verify_against_witnesses(seen: Seen, origin: str, entries: Iterable[Cosigned],
                             ca: x509.Certificate) -> list[WitnessRow]:
    """Check a verified log or export (``seen``) of ``origin`` against every checkpoint a witness cosigned for it:
    each must be a prefix of the log (``TamperedLog``, reason ``truncated`` or ``forked``, naming the checkpoint,
    the witness and the seq). Returns one row per checkpoint checked; entries that do not verify are refused
    (``VerificationError``): a forged witness record is an attack too."""
    rows: list[WitnessRow] = []
    for entry in sorted((e for e in entries if e.origin == origin), key=lambda e: (e.size, e.witness)):
        cp = verify_cosigned(entry, ca)
        when = dt.datetime.fromtimestamp(entry.timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        saw = f"witness {entry.witness} cosigned checkpoint {cp.origin} size {cp.size} (seq {cp.size}) at {when}"
        try:
            check_extends(seen, cp.size, cp.root, saw, must_cover=True)
        except TamperedLog as exc:
            raise TamperedLog(exc.message, seq=exc.seq, reason=exc.reason, witness=entry.witness,
                              checkpoint={"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}) from None
        rows.append(WitnessRow(witness=entry.witness, origin=cp.origin, size=cp.size, root=cp.root.hex(),
                               timestamp=entry.timestamp, seq=cp.size))
    return rows
