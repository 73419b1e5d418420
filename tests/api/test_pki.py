"""``gravenctl gen config`` and the certificates of the API: what is written, with which modes, and what the
certificates say (roles, usages, issuer, lifetime)."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import config
from api import _clientconfig
from api._pki import (
    ClusterSecrets,
    check_roles,
    fingerprint,
    gen_config,
    issue_client_certificate,
    issue_server_certificate,
    self_signed_certificate,
)
from cli.main import main
from errors import InvalidConfig, InvalidRequest
from pki import load_private_key, public_raw

FILES = {"ca.crt": 0o644, "ca.key": 0o600, "image.key": 0o600, "image.pub": 0o644, "controlplane.yaml": 0o600,
         "gravenconfig": 0o600, "etcd-ca.crt": 0o644, "etcd-ca.key": 0o600}


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_gen_config_writes_every_file_with_its_mode(tmp_path: Path) -> None:
    written = gen_config("prod", "10.0.0.2", tmp_path)
    assert {p.name: m for p, m in written} == FILES
    for name, m in FILES.items():
        assert mode(tmp_path / name) == m, name
    assert not [p for p in tmp_path.iterdir() if p.name not in FILES]  # no temporary files left behind


def test_machine_config_holds_the_ca_the_trusted_key_and_the_endpoint(tmp_path: Path) -> None:
    gen_config("prod", "node1.example:50001", tmp_path, install_disk="/dev/vda")
    cfg = config.load((tmp_path / "controlplane.yaml").read_bytes())
    assert cfg.machine.ca.crt_pem() == (tmp_path / "ca.crt").read_bytes()
    assert base64.b64decode(cfg.machine.ca.key or "") == (tmp_path / "ca.key").read_bytes()
    pub = serialization.load_pem_public_key((tmp_path / "image.pub").read_bytes())
    assert isinstance(pub, Ed25519PublicKey)
    raw = public_raw(pub)
    assert cfg.machine.install.trusted_keys == (base64.b64encode(raw).decode(),)
    assert public_raw(load_private_key((tmp_path / "image.key").read_bytes()).public_key()) == raw  # one pair
    assert cfg.machine.install.disk == "/dev/vda"
    assert "node1.example" in cfg.machine.cert_sans
    assert cfg.cluster.name == "prod"
    assert cfg.cluster.endpoint == "node1.example:50001"
    assert cfg.cluster.etcd is not None
    assert cfg.cluster.etcd.ca.crt_pem() == (tmp_path / "etcd-ca.crt").read_bytes()
    assert cfg.cluster.etcd.ca.key_pem() == (tmp_path / "etcd-ca.key").read_bytes()


def test_gravenconfig_has_an_admin_context_for_the_endpoint(tmp_path: Path) -> None:
    gen_config("prod", "https://10.0.0.2:50001", tmp_path)
    cfg = _clientconfig.load(tmp_path / "gravenconfig")
    name, ctx = cfg.current()
    assert name == "prod"
    assert ctx.endpoints == ["10.0.0.2:50001"]
    assert ctx.ca == (tmp_path / "ca.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(ctx.crt)
    ca = x509.load_pem_x509_certificate(ctx.ca)
    cert.verify_directly_issued_by(ca)
    assert ctx.roles() == ["os:admin"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < life <= dt.timedelta(days=366)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)  # TLS leaf keys are ECDSA P-256 (see _pki)


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "image.pub").write_text("mine")
    with pytest.raises(InvalidRequest, match=r"image\.pub exists.*--force"):
        gen_config("prod", "10.0.0.2", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["image.pub"]
    assert (tmp_path / "image.pub").read_text() == "mine"
    gen_config("prod", "10.0.0.2", tmp_path, force=True)
    assert (tmp_path / "image.pub").read_text() != "mine"
    assert mode(tmp_path / "ca.key") == 0o600


def test_bad_name_or_endpoint_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig):
        gen_config("Not a name!", "10.0.0.2", tmp_path)
    with pytest.raises(InvalidRequest, match="port"):
        gen_config("prod", "10.0.0.2:99999", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_gen_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["gen", "config", "lab", "127.0.0.1", "-o", str(out)]) == 0
    text = capsys.readouterr()
    assert "gravenconfig" in text.out and "0600" in text.out
    assert f"GRAVENCONFIG={(out / 'gravenconfig').resolve()}" in text.err
    assert main(["gen", "config", "lab", "127.0.0.1", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error [INVALID_REQUEST]: ") and "ca.crt exists" in err
    assert main(["gen", "config", "lab", "127.0.0.1", "-o", str(out), "--force"]) == 0


def test_client_and_server_certificates() -> None:
    s = ClusterSecrets.generate("c")
    crt, _ = issue_client_certificate(s.ca_key, s.ca_cert, cn="bob", roles=["os:reader", "os:operator"],
                                      ttl=dt.timedelta(hours=24))
    cert = x509.load_pem_x509_certificate(crt)
    orgs = sorted(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    assert orgs == ["os:operator", "os:reader"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=24)

    crt, _ = issue_server_certificate(s.ca_key, s.ca_cert, cn="node1", sans=["10.0.0.2", "node1", "10.0.0.2"])
    cert = x509.load_pem_x509_certificate(crt)
    cert.verify_directly_issued_by(s.ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    assert san.get_values_for_type(x509.DNSName) == ["node1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    crt, _ = self_signed_certificate("graven-maintenance", ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(crt)
    assert cert.issuer == cert.subject
    assert len(fingerprint(crt)) == 64 and fingerprint(crt) == fingerprint(cert)


def test_roles_are_checked() -> None:
    assert check_roles(["os:reader", " os:admin", "os:reader"]) == ["os:admin", "os:reader"]
    with pytest.raises(InvalidRequest, match=r"unknown role.*os:root"):
        check_roles(["os:root"])
    with pytest.raises(InvalidRequest, match="no role"):
        check_roles([""])


def test_alternative_names_keep_their_order_with_addresses_as_addresses() -> None:
    import ipaddress

    from pki import subject_alt_names

    assert subject_alt_names(["10.0.0.2", "node1.lab", "fd00::2", "10.0.0.2"]) == [
        x509.IPAddress(ipaddress.ip_address("10.0.0.2")), x509.DNSName("node1.lab"),
        x509.IPAddress(ipaddress.ip_address("fd00::2")), x509.IPAddress(ipaddress.ip_address("10.0.0.2"))]
    crt, _ = self_signed_certificate("graven-maintenance", ["127.0.0.1", "localhost"])
    sans = x509.load_pem_x509_certificate(crt).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(sans.value) == [x509.DNSName("graven-maintenance"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                x509.DNSName("localhost")]
