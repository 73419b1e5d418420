"""``gravenctl image build|verify|inspect|keygen``: signed images, offline.

Exit codes: 0 on success; 1 with the reason when an image does not verify (or a build fails).
"""

from __future__ import annotations

import argparse
import sys
import time

import image

from ._output import add_output_flag, print_json, table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "image", help="build, verify and inspect signed images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = group.add_subparsers(dest="image_command", metavar="COMMAND", required=True)

    p = cmds.add_parser(
        "build", help="build a signed, reproducible image of the agent's code",
        description="Squash etc/os-release and the agent's code (stamped with VERSION) into a reproducible "
        "squashfs, then append the signed manifest and the trailer.",
    )
    p.add_argument("--version", required=True, help="the image version, stamped into its code")
    p.add_argument("--key", required=True, metavar="KEY.pem", help="Ed25519 private key (PEM) to sign with")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="FILE", help="image file to write")
    p.add_argument("--overlay", metavar="DIR", help="copy this tree over the image root")
    p.add_argument("--fault", choices=["boot-crash", "health-fail", "oom"],
                   help="test images only: make the agent crash at boot, fail its health checks, or (oom) start a "
                        "process that allocates past a container machine's memory limit")
    p.add_argument("--created", type=int, metavar="EPOCH",
                   help="creation time in the manifest (default: $SOURCE_DATE_EPOCH or now)")
    p.add_argument("--compression", choices=["gzip", "zstd", "xz", "lz4", "lzo", "lzma"],
                   help="squashfs compression (default: lz4 in its high-compression mode for a full image, the "
                        "fastest to read at power-on, or $GRAVEN_IMAGE_COMPRESSION; gzip with --code-only)")
    p.add_argument("--code-only", action="store_true",
                   help="the lightweight image: code and os-release only, no interpreter or libraries (it runs "
                        "only with the process provisioner, on the host's Python)")
    etcd = p.add_mutually_exclusive_group()
    etcd.add_argument("--with-etcd", dest="etcd", action="store_true", default=None,
                      help="require etcd in the image (this host's etcd and etcdctl, Debian's etcd-server and "
                           "etcd-client): controlplane nodes run it from their own root (default: included when "
                           "this host has it)")
    etcd.add_argument("--no-etcd", dest="etcd", action="store_false",
                      help="leave etcd out (an image for workers only: ~14 MiB smaller)")
    p.add_argument("--source", metavar="DIR", help="project root to take the code from (default: this one)")
    p.set_defaults(func=_build)

    p = cmds.add_parser(
        "verify", help="verify an image's signature and payload digest",
        description="Exit 0 with a summary when the image verifies with a trusted key; 1 with the reason if not.",
    )
    p.add_argument("file", help="image file")
    p.add_argument("--trusted-key", action="append", required=True, metavar="PUB.pem",
                   help="trusted Ed25519 public key, PEM (repeatable)")
    add_output_flag(p)
    p.set_defaults(func=_verify)

    p = cmds.add_parser(
        "inspect", help="show what an image claims, WITHOUT verifying it",
        description="Print the manifest and trailer as read. Nothing is verified: use `image verify`.",
    )
    p.add_argument("file", help="image file")
    add_output_flag(p)
    p.set_defaults(func=_inspect)

    p = cmds.add_parser("keygen", help="make an Ed25519 image signing key pair")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="DIR", help="directory for NAME.pem/.pub")
    p.add_argument("--name", default="image-key", help="file name stem (default: image-key)")
    p.set_defaults(func=_keygen)


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _build(args: argparse.Namespace) -> int:
    key = image.load_signing_key(args.key)
    start = time.monotonic()
    manifest = image.build_image(
        args.version, key, args.out, overlay=args.overlay, fault=args.fault, created=args.created,
        compression=args.compression, source_root=args.source, progress=lambda m: _err(f"build: {m}"),
        code_only=args.code_only, etcd=args.etcd,
    )
    _err(f"build: done in {time.monotonic() - start:.2f} s")
    print(f"{args.out}: Graven {manifest.version}, payload sha256 {manifest.payload_sha256.hex()}, "
          f"signed by {manifest.key_id}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    keys = [image.load_public_key(path) for path in args.trusted_key]
    verified = image.verify(args.file, keys)
    if args.output == "json":
        print_json(verified.to_dict())
    else:
        m = verified.manifest
        table([{"file": args.file, "version": m.version, "digest": m.payload_sha256.hex()[:16],
                "size": verified.image_size, "key": m.key_id, "created": _when(m.created)}],
              ("file", "version", "digest", "size", "key", "created"))
        print(f"OK: {args.file} is Graven {m.version}, signed by trusted key {m.key_id}, payload digest verified")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    info = image.inspect(args.file)
    if args.output == "json":
        print_json(info.to_dict())
        return 0
    m, t = info.manifest, info.trailer
    _err("WARNING: UNVERIFIED. This is what the file claims; use `gravenctl image verify` to check it.")
    rows: list[dict[str, object]] = [
        {"field": "version", "value": m.version},
        {"field": "format", "value": m.format},
        {"field": "created", "value": _when(m.created)},
        {"field": "key id", "value": m.key_id},
        {"field": "payload size", "value": m.payload_size},
        {"field": "payload sha256", "value": m.payload_sha256.hex()},
        {"field": "image size", "value": info.size},
        {"field": "manifest", "value": f"{t.manifest_length} bytes at {t.manifest_offset}"
                                       + ("" if info.canonical else " (NOT canonical)")},
        {"field": "signature", "value": f"{t.signature_length} bytes at {t.signature_offset}"},
    ]
    rows += [{"field": "problem", "value": p} for p in info.problems]
    table(rows, ("field", "value"))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    priv, pub, kid = image.write_keypair(args.out, args.name)
    print(f"key id {kid}: private {priv}, public {pub}")
    return 0


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

