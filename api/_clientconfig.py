"""The client config (``gravenconfig``): contexts of endpoints, nodes and credentials, like talosconfig.

::

    context: prod
    contexts:
      prod:
        endpoints: [10.0.0.2, "10.0.0.3:50000"]
        nodes: []
        ca: <base64 of the CA certificate PEM>
        crt: <base64 of the client certificate PEM>
        key: <base64 of the client private key PEM>

The file is found at ``--gravenconfig``, else ``$GRAVENCONFIG``, else ``~/.graven/config``. It holds a
private key, so it is always written atomically with mode 0600.

Its commands (``gravenctl config context|contexts|endpoint|node|info|merge``) are in ``cli._contexts``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from errors import InvalidRequest, NotFound, StorageError

__all__ = [
    "DEFAULT_PORT",
    "ENV_VAR",
    "ClientConfig",
    "Context",
    "atomic_write",
    "default_path",
    "endpoint_target",
    "load",
    "load_or_new",
    "split_endpoint",
]

DEFAULT_PORT = 50000
ENV_VAR = "GRAVENCONFIG"
_CONTEXT_KEYS = ("endpoints", "nodes", "ca", "crt", "key")


# -- endpoints -------------------------------------------------------------------------------------------
def split_endpoint(endpoint: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port``, a bare IPv6 address or ``https://host:port`` -> (host, port)."""
    text = endpoint.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    if not text:
        raise InvalidRequest(f"endpoint {endpoint!r} is empty", endpoint=endpoint)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidRequest(f"endpoint {endpoint!r}: expected [IPv6]:PORT", endpoint=endpoint)
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:  # a hostname, IPv4, or bare IPv6 address
        host, port_text = text, ""
    if not host:
        raise InvalidRequest(f"endpoint {endpoint!r} has no host", endpoint=endpoint)
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRequest(f"endpoint {endpoint!r}: port {port_text!r} is not 1..65535", endpoint=endpoint)
    return host, int(port_text)


def endpoint_target(endpoint: str) -> str:
    """The ``host:port`` gRPC dials (IPv6 in brackets); port 50000 unless given."""
    host, port = split_endpoint(endpoint)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the file --------------------------------------------------------------------------------------------
@dataclass
class Context:
    """One cluster: where to reach it and with which credentials (PEM bytes)."""

    endpoints: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    ca: bytes = b""
    crt: bytes = b""
    key: bytes = b""

    def certificate(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.crt) if self.crt else None

    def roles(self) -> list[str]:
        cert = self.certificate()
        if cert is None:
            return []
        return sorted(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))

    def to_yaml(self) -> dict[str, object]:
        return {"endpoints": list(self.endpoints), "nodes": list(self.nodes), "ca": _b64(self.ca),
                "crt": _b64(self.crt), "key": _b64(self.key)}


@dataclass
class ClientConfig:
    context: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)
    path: Path | None = None

    def current(self, name: str | None = None) -> tuple[str, Context]:
        """The named context, else the current one; ``NotFound`` names the file and the known contexts."""
        name = name or self.context
        where = f" in {self.path}" if self.path else ""
        if not name:
            raise NotFound(f"no current context{where}; choose one with `gravenctl config context NAME`",
                           path=str(self.path) if self.path else None)
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise NotFound(f"context {name!r} not found{where} (contexts: {known})", context=name)
        return name, self.contexts[name]

    def merge(self, other: ClientConfig) -> dict[str, str]:
        """Add ``other``'s contexts; a name already taken becomes ``NAME-1``, ``NAME-2``... Returns
        {original name: name used}. The current context becomes ``other``'s current one."""
        used: dict[str, str] = {}
        for name, ctx in other.contexts.items():
            new = name
            n = 0
            while new in self.contexts:
                n += 1
                new = f"{name}-{n}"
            self.contexts[new] = ctx
            used[name] = new
        if other.context in used:
            self.context = used[other.context]
        return used

    def dumps(self) -> str:
        doc = {"context": self.context, "contexts": {n: c.to_yaml() for n, c in sorted(self.contexts.items())}}
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise InvalidRequest("no path to save the client config to")
        atomic_write(target, self.dumps().encode(), mode=0o600)
        self.path = target
        return target


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode("ascii")


def _unb64(value: object, where: str) -> bytes:
    if value in (None, ""):
        return b""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected base64 text", path=where)
    text = value.strip()
    if text.startswith("-----BEGIN"):  # tolerate PEM written in clear
        return text.encode() + b"\n"
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: not valid base64", path=where) from None
    if not data.lstrip().startswith(b"-----BEGIN"):
        raise InvalidRequest(f"{where}: the base64 does not hold a PEM block", path=where)
    return data


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{where}: expected a list of strings", path=where)
    return list(value)


def loads(text: str | bytes, name: str = "client config") -> ClientConfig:
    """Parse a client config; every error names the file and the key."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{name}: not YAML: {exc}", path=name) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise InvalidRequest(f"{name}: expected a mapping with `context` and `contexts`", path=name)
    unknown = set(doc) - {"context", "contexts"}
    if unknown:
        raise InvalidRequest(f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}", path=name)
    current = doc.get("context")
    if current is not None and not isinstance(current, str):
        raise InvalidRequest(f"{name}: context: expected a name", path=name)
    raw = doc.get("contexts") or {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{name}: contexts: expected a mapping of name to context", path=name)
    contexts: dict[str, Context] = {}
    for cname, body in raw.items():
        where = f"{name}: contexts.{cname}"
        if not isinstance(body, Mapping):
            raise InvalidRequest(f"{where}: expected a mapping", path=where)
        extra = set(body) - set(_CONTEXT_KEYS)
        if extra:
            raise InvalidRequest(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))}", path=where)
        contexts[str(cname)] = Context(
            endpoints=_strings(body.get("endpoints"), f"{where}.endpoints"),
            nodes=_strings(body.get("nodes"), f"{where}.nodes"),
            ca=_unb64(body.get("ca"), f"{where}.ca"),
            crt=_unb64(body.get("crt"), f"{where}.crt"),
            key=_unb64(body.get("key"), f"{where}.key"),
        )
    return ClientConfig(current, contexts)


def default_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--gravenconfig``, else ``$GRAVENCONFIG``, else ``~/.graven/config``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path.home() / ".graven" / "config"


def load(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    p = default_path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no client config at {p} (create one with `gravenctl gen config`, or set ${ENV_VAR} "
                       "or --gravenconfig)", path=str(p)) from None
    except OSError as exc:
        raise InvalidRequest(f"{p}: cannot read: {exc.strerror}", path=str(p)) from None
    cfg = loads(text, str(p))
    cfg.path = p
    return cfg


def load_or_new(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    p = default_path(path)
    if not p.exists():
        return ClientConfig(path=p)
    return load(p)


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """``storage.write_durably`` for the client's files (readers see the old file or the new one, never a part;
    ``mode`` from the first byte), in a folder made private (0700) when it is new; a failure names the file."""
    from storage import write_durably  # here, not at import: gravenctl's read-only commands never load storage

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(p, data, mode=mode)
    except OSError as exc:
        raise InvalidRequest(f"{p}: cannot write: {exc.strerror}", path=str(p)) from None
    except StorageError as exc:
        errno_ = exc.details.get("errno")
        why = os.strerror(errno_) if isinstance(errno_, int) else exc.message
        raise InvalidRequest(f"{p}: cannot write: {why}", path=str(p)) from None
