"""``gravenctl gen config|etcd-client``: the commands over ``api._pki.gen_config`` and ``gen_etcd_client``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api import gen_config, gen_etcd_client

from ._output import table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = subparsers.add_parser("gen", help="generate cluster secrets and configs",
                                description="Generate a cluster's secrets, machine config and client config.")
    cmds = gen.add_subparsers(dest="gen_command", metavar="COMMAND", required=True)
    p = cmds.add_parser(
        "config", help="a CA, an image signing key, controlplane.yaml and an admin gravenconfig",
        description="Write into DIR: ca.crt, ca.key (0600), image.key (0600), image.pub, controlplane.yaml "
                    "(0600, holds the CA key) and gravenconfig (0600, an os:admin client certificate valid one "
                    "year, context NAME, endpoint ENDPOINT). Existing files are never overwritten without --force.",
    )
    p.add_argument("name", help="cluster name (also the client config's context name)")
    p.add_argument("endpoint", help="the node's API endpoint: host or host:port (port 50000 by default)")
    p.add_argument("-o", "--output-dir", dest="out_dir", default=".", metavar="DIR", help="where to write (default .)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--install-disk", default="/dev/sda", help="machine.install.disk (default /dev/sda)")
    p.add_argument("--install-image", help="machine.install.image")
    p.set_defaults(func=_gen_config)
    e = cmds.add_parser(
        "etcd-client", help="a client certificate for etcdctl, from the cluster's etcd CA",
        description="Write into OUT: ca.crt (the etcd CA), client.crt and client.key (0600), a client certificate "
                    "issued by the etcd CA in DIR (etcd-ca.crt, etcd-ca.key as gen config writes them). Use them "
                    "as: ETCDCTL_API=3 etcdctl --cacert OUT/ca.crt --cert OUT/client.crt --key OUT/client.key "
                    "--endpoints https://NODE:2379 member list",
    )
    e.add_argument("--secrets", required=True, metavar="DIR", help="the folder gen config wrote the secrets into")
    e.add_argument("-o", "--output-dir", dest="out_dir", default=".", metavar="OUT", help="where to write (default .)")
    e.add_argument("--cn", default="graven-etcd-client", help="the certificate's common name")
    e.add_argument("--force", action="store_true", help="overwrite existing files")
    e.set_defaults(func=_gen_etcd_client)


def _gen_config(args: argparse.Namespace) -> int:
    written = gen_config(args.name, args.endpoint, args.out_dir, force=args.force, install_disk=args.install_disk,
                         install_image=args.install_image)
    table([{"file": str(p), "mode": f"{mode:04o}"} for p, mode in written], ("file", "mode"))
    config_path = next(p for p, _ in written if p.name == "gravenconfig")
    sys.stderr.write(f"use it with: export GRAVENCONFIG={config_path.resolve()}\n")
    return 0



def _gen_etcd_client(args: argparse.Namespace) -> int:
    written = gen_etcd_client(args.secrets, args.out_dir, cn=args.cn, force=args.force)
    table([{"file": str(p), "mode": f"{mode:04o}"} for p, mode in written], ("file", "mode"))
    d = Path(args.out_dir)
    sys.stderr.write(f"use it with: ETCDCTL_API=3 etcdctl --cacert {d / 'ca.crt'} --cert {d / 'client.crt'} "
                     f"--key {d / 'client.key'} --endpoints https://NODE:2379 member list\n")
    return 0
