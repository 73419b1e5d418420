"""Validation of a plain config tree against the schema: every error at once, plus warnings.

The tree is walked with the Structs' type info, so that an unknown key, a wrong type, a missing key and a bad
value are each reported with the path of the value (``machine.network.interfaces[1].addresses[0]``) and,
when the tree came from YAML, its line. A bad value never stops the walk. Cross-field rules run on the
same raw tree and skip what is malformed, so they never report a consequence of an error twice.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping, Sequence

import msgspec
import msgspec.inspect as mi

from errors import InvalidConfig

from ._checks import CHECKS, decode_pem, etcd_ca_problem
from ._schema import MachineConfig
from .limits import LIMITS, clip_utf8

__all__ = ["Path", "Problem", "Validation", "format_path", "validate_tree"]

Path = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """``("machine", "network", "interfaces", 1)`` → ``machine.network.interfaces[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() or part.replace("-", "_").isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One error or warning: the dotted path of the value, its YAML line (1-based) if known, what is wrong."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(document)"
        return f"{where} (line {self.line}): {self.message}" if self.line else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message}


class Validation(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of validating a config: the config when there is no error, every error, every warning."""

    config: MachineConfig | None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, source: str | None = None) -> InvalidConfig:
        """The ``InvalidConfig`` to raise: ``details`` carry ``errors`` and ``warnings`` as dicts."""
        n, keep = len(self.errors), LIMITS.reported_errors
        head = f"{source}: " if source else ""
        lines = [f"{head}invalid machine config: {n} error{'s' if n != 1 else ''}"]
        lines += [f"  - {_short(str(p))}" for p in self.errors[:keep]]
        more = {}
        if n > keep:
            lines.append(f"  - and {n - keep} more (limit reported_errors = {keep})")
            more = {"more_errors": n - keep}
        return InvalidConfig(
            "\n".join(lines),
            errors=[_short_problem(p) for p in self.errors[:keep]],
            warnings=[_short_problem(p) for p in self.warnings[:keep]],
            **more,
            **({"more_warnings": len(self.warnings) - keep} if len(self.warnings) > keep else {}),
            **({"source": source} if source else {}),
        )

    def unwrap(self, source: str | None = None) -> MachineConfig:
        """The config, or raise ``InvalidConfig`` with every error."""
        if self.errors or self.config is None:
            raise self.error(source)
        return self.config


def _short(text: str) -> str:
    """One reported problem stays short even when it quotes a hostile key or value."""
    return clip_utf8(text, 240)


def _short_problem(p: Problem) -> dict[str, object]:
    return {"path": _short(p.path), "line": p.line, "message": _short(p.message)}


_INFO = mi.type_info(MachineConfig)


class _Ctx:
    def __init__(self, lines: Mapping[Path, int]) -> None:
        self.lines = lines
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def line(self, path: Path) -> int | None:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def error(self, path: Path, message: str) -> None:
        self.errors.append(Problem(path=format_path(path), message=message, line=self.line(path)))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(Problem(path=format_path(path), message=message, line=self.line(path)))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()}; quote it to make a string)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _walk(value: object, t: mi.Type, path: Path, ctx: _Ctx) -> bool:
    """Report every problem of ``value`` against ``t``; true when its type (not necessarily value) is right."""
    if isinstance(t, mi.Metadata):
        if not _walk(value, t.type, path, ctx):
            return False
        extra = t.extra or {}
        if extra.get("secret") and isinstance(value, str) and value.startswith("sha256:"):
            ctx.error(path, "holds the digest of a redacted secret, not the secret; supply the real value")
        elif "check" in extra and isinstance(value, str) and (msg := CHECKS[str(extra["check"])](value)) is not None:
            ctx.error(path, msg)
        return True
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if value is None and len(rest) < len(t.types):
            return True
        return _walk(value, rest[0], path, ctx)
    if isinstance(t, mi.StructType):
        return _walk_struct(value, t, path, ctx)
    if isinstance(t, mi.VarTupleType | mi.ListType):
        if not isinstance(value, list):
            hint = " (write one item as a one-element list: [x])" if isinstance(value, str | int) else ""
            ctx.error(path, f"expected a list, got {_kind(value)}{hint}")
            return False
        for i, item in enumerate(value):
            _walk(item, t.item_type, (*path, i), ctx)
        return True
    if isinstance(t, mi.StrType):
        if not isinstance(value, str):
            hint = "; quote it to make it a string" if isinstance(value, bool | int | float) else ""
            ctx.error(path, f"expected a string, got {_kind(value)}{hint}")
            return False
        return True
    if isinstance(t, mi.BoolType):
        if not isinstance(value, bool):
            ctx.error(path, f"expected a boolean (true or false), got {_kind(value)}")
            return False
        return True
    if isinstance(t, mi.IntType):
        if not isinstance(value, int) or isinstance(value, bool):
            ctx.error(path, f"expected an integer, got {_kind(value)}")
            return False
        lo, hi = t.ge, t.le
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            ctx.error(path, f"{value} is out of range ({lo} to {hi})")
        return True
    if isinstance(t, mi.LiteralType):
        if value not in t.values or not isinstance(value, str):
            allowed = ", ".join(str(v) for v in t.values)
            got = repr(value) if isinstance(value, str) else _kind(value)
            ctx.error(path, f"must be one of: {allowed} (got {got})")
            return False
        return True
    raise TypeError(f"config schema uses an unsupported type {t!r}")  # a bug in _schema


def _walk_struct(value: object, t: mi.StructType, path: Path, ctx: _Ctx) -> bool:
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {_kind(value)}")
        return False
    fields = {f.encode_name: f for f in t.fields}
    for key, item in value.items():
        if key in fields:
            _walk(item, fields[key].type, (*path, key), ctx)
            continue
        if not isinstance(key, str):
            ctx.error((*path, str(key)), f"keys must be strings, got {_kind(key)}")
            continue
        import difflib  # only for a config with a typo: not resident in every agent

        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
        ctx.error((*path, key), f"unknown key {key!r} ({hint})")
    for name, f in fields.items():
        if f.required and name not in value:
            ctx.error((*path, name), f"missing required key {name!r}")
    return True


def _get(tree: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _items(value: object) -> list[tuple[int, object]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _interface(value: object) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        return ipaddress.ip_interface(value) if isinstance(value, str) and "/" in value else None
    except ValueError:
        return None


def _cross_checks(tree: object, ctx: _Ctx) -> None:
    net = ("machine", "network")
    seen_ifaces: dict[str, int] = {}
    seen_addrs: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for i, iface in _items(_get(tree, *net, "interfaces")):
        if not isinstance(iface, dict):
            continue
        here: Path = (*net, "interfaces", i)
        name = iface.get("interface")
        if isinstance(name, str):
            if name in seen_ifaces:
                ctx.error((*here, "interface"), f"duplicate interface {name!r} (also interfaces[{seen_ifaces[name]}])")
            seen_ifaces.setdefault(name, i)
        nets = []
        for j, addr in _items(iface.get("addresses")):
            if (ip := _interface(addr)) is None:
                continue
            nets.append(ip.network)
            if ip.ip in seen_addrs:
                ctx.error((*here, "addresses", j), f"address {ip.ip} is already assigned at {seen_addrs[ip.ip]}")
            seen_addrs.setdefault(ip.ip, format_path((*here, "addresses", j)))
        if not iface.get("addresses") and iface.get("dhcp") is not True:
            ctx.warn(here, f"interface {name!r} has no addresses and DHCP off, so it gets no address")
        for k, route in _items(iface.get("routes")):
            if isinstance(route, dict):
                _check_gateway(route, (*here, "routes", k), nets, iface.get("dhcp") is True, ctx)


def _etcd_checks(tree: object, ctx: _Ctx) -> None:
    """``cluster.etcd.ca``: ECDSA; only controlplane nodes hold it, and they need its key."""
    etcd = _get(tree, "cluster", "etcd")
    kind = _get(tree, "machine", "type")
    if not isinstance(etcd, dict) or not isinstance(etcd.get("ca"), dict):
        return  # a controlplane node without it runs no etcd; bootstrap says so
    here: Path = ("cluster", "etcd", "ca")
    crt, key = etcd["ca"].get("crt"), etcd["ca"].get("key")
    if kind == "worker" and key is not None:
        ctx.error((*here, "key"), "a worker must not hold the etcd CA key (only controlplane nodes run etcd)")
    if kind == "controlplane" and key is None:
        ctx.error((*here, "key"), "a controlplane node issues its own etcd certificates: the etcd CA key is needed")
    if not isinstance(crt, str):
        return  # wrong types are reported at their own paths
    try:
        crt_pem = decode_pem(crt)
    except ValueError:
        return  # reported by the field's own check
    problem = etcd_ca_problem(crt_pem)
    if problem is not None:
        ctx.error(here, problem)


_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _check_gateway(route: dict[str, object], here: Path, nets: Sequence[_Net], dhcp: bool, ctx: _Ctx) -> None:
    gateway, network = route.get("gateway"), route.get("network")
    if not isinstance(gateway, str) or not isinstance(network, str):
        return  # a wrong type is reported at its own path; ipaddress would take an int as an address
    try:
        gw = ipaddress.ip_address(gateway)
        dest = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return
    if gw.version != dest.version:
        ctx.error((*here, "gateway"), f"gateway {gw} is IPv{gw.version} but network {dest} is IPv{dest.version}")
    elif gw.is_unspecified or gw.is_multicast:
        ctx.error((*here, "gateway"), f"gateway {gw} is not a unicast address")
    elif nets and not dhcp and not any(gw in n for n in nets if n.version == gw.version):
        ctx.warn((*here, "gateway"), f"gateway {gw} is on none of the interface's networks; it may be unreachable")


def _warnings(tree: object, ctx: _Ctx) -> None:
    if isinstance(_get(tree, "machine"), dict):
        if _get(tree, "machine", "network", "hostname") is None:
            ctx.warn(("machine", "network", "hostname"), "no hostname set; the node keeps its default hostname")
        if isinstance(_get(tree, "machine", "ca"), dict) and _get(tree, "machine", "ca", "key") is None:
            ctx.warn(("machine", "ca", "key"), "no CA key: the node cannot certify its own log key")
        if not _get(tree, "machine", "install", "trustedKeys"):
            ctx.warn(
                ("machine", "install", "trustedKeys"),
                "no trusted image keys: the node will refuse to install or upgrade to any image",
            )
        if not _get(tree, "machine", "audit", "sinks"):
            ctx.warn(("machine", "audit", "sinks"), "no audit sinks: a reset wipes the event log without shipping it")


def _by_line(p: Problem) -> int:
    return p.line if p.line is not None else 1 << 62


def validate_tree(tree: object, lines: Mapping[Path, int] | None = None) -> Validation:
    """Validate a plain tree (as decoded from YAML or JSON); ``lines`` maps paths to YAML lines."""
    ctx = _Ctx(lines or {})
    _walk(tree, _INFO, (), ctx)
    _cross_checks(tree, ctx)
    _etcd_checks(tree, ctx)
    _warnings(tree, ctx)
    ctx.errors.sort(key=_by_line)
    ctx.warnings.sort(key=_by_line)
    if ctx.errors:
        return Validation(config=None, errors=tuple(ctx.errors), warnings=tuple(ctx.warnings))
    try:
        config = msgspec.convert(tree, MachineConfig)
    except msgspec.ValidationError as exc:  # the walker should have caught it; report rather than crash
        ctx.error((), f"invalid: {exc}")
        return Validation(config=None, errors=tuple(ctx.errors), warnings=tuple(ctx.warnings))
    return Validation(config=config, warnings=tuple(ctx.warnings))


def install_disk_mismatch(named: str, actual: str) -> InvalidConfig:
    """The error for a config whose ``machine.install.disk`` is not the disk the machine was given."""
    problem = Problem(path="machine.install.disk",
                      message=f"names {named}, but this machine's disk is {actual}: nothing was written to either")
    return Validation(config=None, errors=(problem,)).error()
