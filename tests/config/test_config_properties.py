"""Property tests: round trips, mutations naming exactly their path, patch and diff laws, secrets."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import msgspec
import yaml
from config_fixtures import keys
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
ip = st.one_of(ipv4, ipv6)
# a key long enough not to occur by chance in a digest's hex or a hostname
b64 = st.binary(min_size=8, max_size=48).map(lambda b: base64.b64encode(b).decode())


def pem(label: str, body: str) -> str:
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


secret_key = b64.map(lambda body: pem("PRIVATE KEY", body))
ca = st.builds(
    config.CA,
    crt=st.sampled_from([keys()["crt_pem"], keys()["crt_b64"]]),
    key=st.one_of(st.none(), secret_key, secret_key.map(lambda p: base64.b64encode(p.encode()).decode())),
)
trusted_key = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
install = st.builds(
    config.Install,
    disk=st.from_regex(r"/dev/[a-z]{2,4}[0-9]?", fullmatch=True),
    image=st.one_of(st.none(), st.from_regex(r"[a-z0-9_./:-]{1,20}", fullmatch=True)),
    wipe=st.booleans(),
    trusted_keys=st.lists(trusted_key, max_size=2).map(tuple),
)


@st.composite
def interfaces(draw: st.DrawFn) -> tuple[config.Interface, ...]:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True), max_size=3, unique=True))
    addrs = draw(st.lists(ip, max_size=2 * len(names), unique=True))
    out = []
    for i, name in enumerate(names):
        mine = addrs[2 * i : 2 * i + 2]
        cidrs = tuple(f"{a}/{draw(st.integers(0, a.max_prefixlen))}" for a in mine)
        routes = []
        for _ in range(draw(st.integers(0, 2))):
            dest = draw(ip)
            net = ipaddress.ip_network(f"{dest}/{draw(st.integers(0, dest.max_prefixlen))}", strict=False)
            gw = draw(st.none() | (ipv4 if net.version == 4 else ipv6))
            if gw is not None and (gw.is_unspecified or gw.is_multicast):
                gw = None
            metric = draw(st.none() | st.integers(0, 2**32 - 1))
            routes.append(config.Route(network=str(net), gateway=None if gw is None else str(gw), metric=metric))
        mtu = draw(st.none() | st.integers(68, 65535))
        out.append(
            config.Interface(interface=name, addresses=cidrs, routes=tuple(routes), mtu=mtu, dhcp=draw(st.booleans()))
        )
    return tuple(out)


network = st.builds(
    config.Network,
    hostname=st.none() | hostname,
    nameservers=st.lists(ip.map(str), max_size=2).map(tuple),
    interfaces=interfaces(),
)
sink = st.one_of(st.from_regex(r"/[a-z0-9/]{0,15}", fullmatch=True), hostname.map(lambda h: f"https://{h}/up"))
audit = st.builds(config.Audit, checkpoint_every=st.integers(1, 1_000_000), sinks=st.lists(sink, max_size=2).map(tuple))
endpoint = st.tuples(st.sampled_from(["https://", ""]), st.one_of(hostname, ipv4.map(str)), st.integers(1, 65535)).map(
    lambda t: f"{t[0]}{t[1]}:{t[2]}"
)
configs = st.builds(
    config.MachineConfig,
    version=st.just("v1alpha1"),
    machine=st.builds(
        config.Machine,
        type=st.sampled_from(["controlplane", "worker"]),
        ca=ca,
        cert_sans=st.lists(st.one_of(hostname, ip.map(str)), max_size=3).map(tuple),
        install=st.none() | install,
        network=network,
        audit=audit,
    ),
    cluster=st.builds(
        config.Cluster, name=st.from_regex(r"[a-z0-9]([a-z0-9_.-]{0,10}[a-z0-9])?", fullmatch=True), endpoint=endpoint
    ),
)


@SETTINGS
@given(configs)
def test_any_valid_config_validates_and_round_trips(cfg):
    result = config.validate(cfg)
    assert result.ok, result.errors
    text = config.dump_yaml(cfg)
    assert config.load(text) == cfg
    assert config.digest(config.load(text)) == config.digest(cfg)


def containers(tree: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every (path, value) below the root, depth first."""
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        out.append(((*path, key), value))
        out.extend(containers(value, (*path, key)))
    return out


def set_at(tree: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


@SETTINGS
@given(configs, st.data(), st.from_regex(r"x[a-z]{1,8}", fullmatch=True))
def test_an_unknown_key_anywhere_is_named_exactly(cfg, data, key):
    tree = config.to_dict(cfg)
    mappings = [((), tree)] + [(p, v) for p, v in containers(tree) if isinstance(v, dict)]
    where, target = data.draw(st.sampled_from(mappings))
    target[key] = data.draw(st.sampled_from([1, "x", [1], {"a": 1}, None]))
    result = config.validate(yaml.safe_dump(tree, sort_keys=False))
    assert [p.path for p in result.errors] == [config.format_path((*where, key))]
    assert result.errors[0].line is not None


def wrong_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "text"
    if isinstance(value, int):
        return "12"
    if isinstance(value, str):
        return 12
    if isinstance(value, list):
        return {"a": 1}
    return [1]


@SETTINGS
@given(configs, st.data())
def test_a_wrong_type_anywhere_is_named_exactly(cfg, data):
    tree = config.to_dict(cfg)
    where, value = data.draw(st.sampled_from(containers(tree)))
    set_at(tree, where, wrong_value(value))
    result = config.validate(yaml.safe_dump(tree, sort_keys=False))
    assert [p.path for p in result.errors] == [config.format_path(where)]


@SETTINGS
@given(configs)
def test_merge_patch_with_itself_is_identity(cfg):
    tree = config.to_dict(cfg)
    assert config.merge_patch(tree, tree) == tree
    assert config.apply_patch(cfg, config.MergePatch(tree)) == cfg
    assert config.apply_patch(cfg, config.MergePatch({})) == cfg


@SETTINGS
@given(configs, configs, st.booleans())
def test_diff_is_empty_iff_equal(a, b, same):
    if same:
        b = config.load(config.dump_yaml(a))
    changes = config.diff(a, b)
    assert (changes == []) == (a == b)
    assert (config.digest(a) == config.digest(b)) == (a == b)


@SETTINGS
@given(configs, configs)
def test_json_patch_from_diff_free_replace_reaches_the_target(a, b):
    # replacing the whole machine and cluster with b's turns a into b
    tree = config.to_dict(b, full=True)
    ops = [{"op": "replace", "path": f"/{k}", "value": tree[k]} for k in ("machine", "cluster")]
    assert config.apply_patch(a, config.JsonPatch(tuple(ops))) == b


def _leaves(tree: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, str(k)))]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _leaves(v, path)]
    return [(path, tree)]


def _parts(secret: str) -> list[str]:
    """The secret, and the base64 body of a PEM, each of which must never appear."""
    return [secret, secret.strip().splitlines()[1]] if secret.startswith("-----") else [secret]


@SETTINGS
@given(configs, configs)
def test_secrets_never_appear_in_diffs_reprs_or_events(a, b):
    # a key (or its PEM body) drawn inside a public value of either config (all-zero keys in a trusted key or a
    # certificate, say) is public too: finding it in a text is no leak
    public = [v for c in (a, b) for path, v in _leaves(config.to_dict(c, full=True))
              if isinstance(v, str) and path != ("machine", "ca", "key")]
    secrets = [s for s in (a.machine.ca.key, b.machine.ca.key)
               if s and not any(part in v for v in public for part in _parts(s))]
    texts = [
        repr(config.diff(a, b)),
        repr(config.diff(None, a)),
        repr(config.diff(b, None)),
        repr(a),
        str(b),
        repr(msgspec.json.encode([c.to_dict() for c in config.diff(a, b)])),
        config.dump_yaml(config.redact(a)),
        repr(config.redacted_dict(b)),
        repr(config.plan_apply(a, a, None, b, "reboot", dry_run=True).event_payload()),
    ]
    for s in secrets:
        for text in texts:
            assert s not in text
            if s.startswith("-----"):
                assert s.strip().splitlines()[1] not in text  # not even the base64 body of a PEM
