"""Local clusters of sandbox (or loop-device block) machines: what ``gravenctl cluster create|show|destroy``
(``cli._cluster``) runs.

``create`` makes the cluster's secrets, builds the v1 image, writes one machine config per node with
``machine.install.image`` pointing at that image, powers each machine on from the image as an installer
(``graven machine --boot-from``, in the background, its own process group, its output in ``machine.log``),
applies the config in maintenance mode, waits for the install and for Running, and writes a client config
(``DIR/NAME/gravenconfig``, also merged into the default client config as context NAME).

Everything lives under ``--state DIR/NAME`` (default ``~/.graven/clusters``); ``cluster.json`` there lists it,
so that ``show`` and ``destroy`` work from it alone, also after a crash. ``destroy`` stops the machines
(SIGTERM to each process group, SIGKILL after a grace period), unmounts what is mounted below the cluster's
folder, detaches the loop devices over its disk files, drops the client config context and removes the folder.

``--network netns`` (the default as root where ``ip netns`` works; else ``loopback``, 127.0.0.1 ports): each
machine runs in a network namespace (and UTS namespace) of its own, made by ``provision._netns``, with its own address
from 198.18.0.0/15 on a bridge and its API on ``ADDRESS:50000``; the agent applies the config's network with
netlink there. The machines install at the same time. With ``--provisioner qemu`` each namespace holds a tap
device bridged to its veth instead of the address, and the VM's virtio NIC on it takes the address (handed over
by the bootloader, then set by the machine config's ``machine.network``). ``destroy`` also removes the cluster's
namespaces, links and whatever still runs inside them, found by their names: after a crash too, even without the
folder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import config
from api import (
    ClientConfig,
    ClusterSecrets,
    Context,
    GravenClient,
    atomic_write,
    default_client_config_path,
    load_or_new_client_config,
)
from errors import GravenError, InvalidRequest, NotFound, Unavailable

from ._record import CLUSTER_FILE, ClusterRecord, MachineType, Network, NodeRecord, read_cluster, write_cluster

__all__ = ["choose_network", "create_cluster", "create_cluster_netns", "load_cluster", "netns_problem"]

DEFAULT_NAME = "graven"
GUEST_API_PORT = 50000  # node._qemu's: a VM on a bridge answers on its own address, this port
FIRST_PORT = 50000
DISK_SIZE = 512 << 20  # block disks: a sparse file, GPT with slots of ~164 MiB and EPHEMERAL of 160 MiB
IMAGE_VERSION = "v1"
NETWORKS = ("netns", "loopback")


def default_state_dir() -> Path:
    return Path.home() / ".graven" / "clusters"


# -- helpers -----------------------------------------------------------------------------------------------
class TimedProgress:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - self.start:6.1f}s] {text}\n")
        sys.stderr.flush()


def _cluster_dir(state: Path | None, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InvalidRequest(f"cluster name {name!r}: use letters, digits and dashes", name=name)
    return (state or default_state_dir()).expanduser().absolute() / name


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _code_root() -> Path:
    """The project this gravenctl runs from: the supervisor (firmware) runs the same code."""
    return Path(__file__).resolve().parent.parent


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_code_root()), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def load_cluster(state: Path | None, name: str) -> ClusterRecord:
    """The cluster's record (``cluster.json``): NotFound when there is no such cluster, InvalidRequest naming the
    file and the field when it is malformed."""
    path = _cluster_dir(state, name) / CLUSTER_FILE
    try:
        return read_cluster(path)
    except NotFound:
        raise NotFound(f"no cluster {name!r} under {path.parent.parent} (create it with `gravenctl cluster create "
                       f"--name {name}`)", path=str(path)) from None


def machine_alive(pid: int | None, marker: str) -> bool:
    """``pid`` runs and its command line names ``marker`` (so a recycled pid is never taken for ours)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def _machine_log_tail(node: NodeRecord, lines: int = 15) -> str:
    try:
        text = Path(node.log).read_text(errors="replace").splitlines()
    except OSError:
        return "(no machine log)"
    if not text:
        return "    (empty: the machine stopped before its first line)"
    return "\n".join(f"    {line}" for line in text[-lines:])


_STARTED: dict[int, subprocess.Popen[bytes]] = {}  # the machines this process started, kept to read how they end


def _how_it_ended(pid: int | None) -> str:
    """How a machine this process started ended (" (exit status 1)", " (killed by SIGKILL)"); "" when unknown."""
    proc = _STARTED.get(pid or 0)
    code = proc.poll() if proc is not None else None
    if code is None:
        return ""
    if code < 0:
        return f" (killed by {signal.Signals(-code).name})"
    return f" (exit status {code})"


# -- create ------------------------------------------------------------------------------------------------
def _write_secrets(name: str, directory: Path, report: Callable[[str], None], *,
                   etcd: bool) -> tuple[ClusterSecrets, dict[str, tuple[str, bytes, int]]]:
    """A new cluster's folder and its secrets, written there: the machine CA, the image key and, with ``etcd``
    (a netns cluster, whose controlplanes run etcd), the etcd CA. Returns them and their files (key -> file name,
    content, mode)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    report(f"cluster {name}: secrets and configs in {directory}")
    secrets = ClusterSecrets.generate(name)
    files = {"ca_cert": ("ca.crt", secrets.ca_crt_pem, 0o644), "ca_key": ("ca.key", secrets.ca_key_pem, 0o600),
             "image_key": ("image.key", secrets.image_key_pem, 0o600),
             "image_pubkey": ("image.pub", secrets.image_pub_pem, 0o644)}
    if etcd and secrets.etcd_ca is not None:  # gravenctl gen etcd-client --secrets DIR reads them
        files["etcd_ca_cert"] = ("etcd-ca.crt", secrets.etcd_ca.crt_pem, 0o644)
        files["etcd_ca_key"] = ("etcd-ca.key", secrets.etcd_ca.key_pem, 0o600)
    for fname, content, mode in files.values():
        atomic_write(directory / fname, content, mode)
    return secrets, files


def _new_record(name: str, directory: Path, disk: str, files: dict[str, tuple[str, bytes, int]], *,
                network: Network, provisioner: str, memory: str | None) -> ClusterRecord:
    """The record of a cluster being made: its folder, the secrets' files (``files``: key -> file name, content,
    mode; the etcd CA's only where there is one), no image and no nodes yet."""

    def path(key: str) -> str:
        return str(directory / files[key][0])

    return ClusterRecord(
        name=name, created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), disk=disk,
        state_dir=str(directory), gravenconfig=str(directory / "gravenconfig"), ca_cert=path("ca_cert"),
        ca_key=path("ca_key"), image_key=path("image_key"), image_pubkey=path("image_pubkey"),
        etcd_ca_cert=path("etcd_ca_cert") if "etcd_ca_cert" in files else None,
        etcd_ca_key=path("etcd_ca_key") if "etcd_ca_key" in files else None,
        network=network, provisioner=provisioner, memory=memory)


def _check_new(name: str, directory: Path, state: Path | None, nodes: int, disk: str) -> None:
    """What both network variants refuse before they make anything."""
    if nodes < 1:
        raise InvalidRequest("--nodes must be at least 1")
    if disk == "block":
        from storage import block_problem

        problem = block_problem()
        if problem:
            raise Unavailable(f"--disk block: {problem}")
    if (directory / CLUSTER_FILE).exists():
        raise InvalidRequest(f"cluster {name!r} exists ({directory}); destroy it first: gravenctl cluster destroy "
                             f"--name {name}" + ("" if state is None else f" --state {state}"), path=str(directory))


def create_cluster(name: str, *, state: Path | None = None, nodes: int = 1, disk: str = "sandbox",
                   port: int = FIRST_PORT, timeout: float = 120.0, health_timeout: float | None = None,
                   merge_into: Path | bool | None = None, say: Callable[[str], None] | None = None,
                   provisioner: str = "process", memory: str | None = None) -> ClusterRecord:
    """Create and boot the cluster; returns its record (``cluster.json``). ``merge_into``: client config path to
    merge the context into (None: the default path; False: none). ``provisioner`` and ``memory`` are recorded in
    ``cluster.json`` and passed to every ``graven machine``."""
    import image

    report = say or TimedProgress()
    directory = _cluster_dir(state, name)
    _check_new(name, directory, state, nodes, disk)
    if port and not _port_free(port):
        raise Unavailable(f"port {port} on 127.0.0.1 is in use (another cluster? see `gravenctl cluster show`); "
                          "choose another with --port, or 0 for any free port", port=port)
    secrets, files = _write_secrets(name, directory, report, etcd=False)
    img = directory / "images" / f"{IMAGE_VERSION}.img"
    report(f"building the {IMAGE_VERSION} image")
    manifest = image.build_image(IMAGE_VERSION, secrets.image_key, img, progress=lambda m: report(f"  image: {m}"))
    record = _new_record(name, directory, disk, files, network="loopback", provisioner=provisioner, memory=memory)
    record.image, record.image_version = str(img), manifest.version
    ports = [port or _free_port()] + [_free_port() for _ in range(nodes - 1)]
    for i in range(nodes):
        node_name = f"{name}-{i + 1}"
        root = directory / "nodes" / node_name
        root.mkdir(parents=True, exist_ok=True)
        record.nodes.append(NodeRecord(name=node_name, root=str(root), endpoint=f"127.0.0.1:{ports[i]}",
                                       disk=str(root / "disk.img") if disk == "block" else None,
                                       config=str(root / "controlplane.yaml"), log=str(root / "machine.log")))
    write_cluster(directory, record)  # from here on, destroy finds everything
    for node in record.nodes:
        cfg = config.default_config(name, f"https://{node.endpoint}", secrets.ca_crt_pem, secrets.ca_key_pem,
                                    [secrets.image_pub_pem], hostname=node.name,
                                    install_disk=_install_disk(node, record), install_image=str(img))
        text = config.dump_yaml(cfg)
        config.validate(text).unwrap(node.config)
        atomic_write(node.config, text.encode(), 0o600)
        if record.provisioner == "qemu":
            _blank_vm_disk(node, report)
        elif node.disk:
            with open(node.disk, "wb") as f:
                f.truncate(DISK_SIZE)
        node.pid = _start_machine(node, record, health_timeout)
        write_cluster(directory, record)
        report(f"{node.name}: machine started (pid {node.pid}), booting the installer; log {node.log}")
    ctx = secrets.client_context([n.endpoint for n in record.nodes])
    ctx.nodes = []
    client_cfg = ClientConfig(context=name, contexts={name: ctx})
    client_cfg.save(directory / "gravenconfig")
    for node in record.nodes:
        _install_node(node, ctx, timeout, report)
    return _announce(record, directory, client_cfg, merge_into, report)


def _announce(record: ClusterRecord, directory: Path, client_cfg: ClientConfig, merge_into: Path | bool | None,
              report: Callable[[str], None]) -> ClusterRecord:
    """Merge the cluster's context into the user's client config (unless told not to) and say the cluster is up."""
    name = record.name
    if merge_into is not False:
        target = default_client_config_path(merge_into if isinstance(merge_into, Path) else None)
        merged = load_or_new_client_config(target)
        used = merged.merge(client_cfg)[name]
        merged.save(target)
        record.client_config, record.context = str(target), used
        write_cluster(directory, record)
        report(f"client config: context {used} in {target} (current)")
    report(f"cluster {name} is up: {', '.join(n.endpoint for n in record.nodes)}")
    return record


def _start_machine(node: NodeRecord, record: ClusterRecord, health_timeout: float | None,
                   prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> int:
    """``graven machine`` for the node, in the background; its pid. ``prefix`` runs it inside the node's namespaces
    (``ip netns exec … unshare --uts``, both exec, so the pid is still the supervisor's; the agent it starts
    inherits them and picks the netlink platform by itself)."""
    if record.image is None:
        raise InvalidRequest(f"cluster {record.name}: no image built yet to boot {node.name} from")
    cmd = [*prefix, sys.executable, "-m", "node", "machine", "--root", node.root, "--boot-from", record.image,
           "--trusted-key", record.image_pubkey, "--listen", node.endpoint]
    if node.disk:
        cmd += ["--disk", node.disk]
    if health_timeout is not None:
        cmd += ["--health-timeout", f"{health_timeout:g}"]
    if record.provisioner in ("container", "qemu"):
        cmd += ["--provisioner", record.provisioner, "--memory", record.memory or "512M"]
    cmd += list(extra)
    with open(node.log, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=node.root, env=_child_env(), start_new_session=True)
    _STARTED[proc.pid] = proc
    return proc.pid


def _blank_vm_disk(node: NodeRecord, report: Callable[[str], None]) -> None:
    """A VM's disk: a blank (sparse) raw image file; the VM boots the installer image, and the install sequence
    partitions and formats it and writes slot A from inside the guest."""
    from node import GUEST_BLANK_DISK_SIZE

    if node.disk is None:
        raise InvalidRequest(f"{node.name}: a VM needs a disk image file")
    with open(node.disk, "wb") as f:
        f.truncate(GUEST_BLANK_DISK_SIZE)
    report(f"{node.name}: blank disk image {node.disk} ({GUEST_BLANK_DISK_SIZE >> 20} MiB, sparse); the VM "
           f"boots the installer image")


def _vm_network(cfg: config.MachineConfig, cidr: str) -> config.MachineConfig:
    """A VM's config: its NIC (eth0) with its address, and that address among the certificate's names (the guest
    listens on 0.0.0.0, and a worker's cluster endpoint names a controlplane node, not itself)."""
    import msgspec

    address = cidr.split("/", 1)[0]
    network = msgspec.structs.replace(cfg.machine.network,
                                      interfaces=(config.Interface(interface="eth0", addresses=(cidr,)),))
    sans = tuple(dict.fromkeys((address, *cfg.machine.cert_sans)))
    machine = msgspec.structs.replace(cfg.machine, network=network, cert_sans=sans)
    return msgspec.structs.replace(cfg, machine=machine)


def _install_disk(node: NodeRecord, record: ClusterRecord) -> str:
    if record.provisioner == "qemu":
        return "/dev/vda"  # the disk image as the guest sees it (virtio-blk)
    return node.disk or "/dev/sda"


def _install_node(node: NodeRecord, ctx: Context, timeout: float,
                  report: Callable[[str], None]) -> None:
    """Maintenance → apply the config → install → reboot → Running and ready, or an error with the log's tail."""
    deadline = time.monotonic() + timeout
    endpoint, name = node.endpoint, node.name

    def fail(why: str) -> GravenError:
        return Unavailable(f"{name}: {why}\n  machine log {node.log}:\n{_machine_log_tail(node)}", node=name)

    last_error = ""
    while True:
        if not machine_alive(node.pid, node.root):
            raise fail(f"the machine stopped{_how_it_ended(node.pid)}")
        try:
            with GravenClient.insecure(endpoint, quiet=True, timeout=5) as client:
                result = client.apply_configuration(Path(node.config).read_bytes())
            break
        except GravenError as exc:
            last_error = exc.message
        if time.monotonic() > deadline:
            raise fail(f"no maintenance API within {timeout:g} s ({last_error})")
        time.sleep(0.1)
    report(f"{name}: config applied in maintenance mode ({result['digest'][:20]}); installing")
    seen, last_error = "", ""
    status_client: GravenClient | None = None
    try:
        while True:
            if not machine_alive(node.pid, node.root):
                raise fail(f"the machine stopped{_how_it_ended(node.pid)}")
            try:
                status_client = status_client or GravenClient.from_context(ctx, endpoint, timeout=5)
                st = status_client.status()
                now = f"{st['stage']}{', ready' if st['ready'] else ''} (slot {st['slot'] or '-'}, {st['version']})"
            except GravenError as exc:
                now, last_error = "installing or rebooting", exc.message
                if status_client is not None:  # a new channel for the next try: nothing carried over a reboot
                    status_client.close()
                    status_client = None
            if now != seen:
                seen = now
                report(f"{name}: {now}")
            if now.startswith("running, ready"):
                return
            if time.monotonic() > deadline:
                raise fail(f"not Running within {timeout:g} s (last seen: {seen}"
                           + (f"; last error: {last_error}" if last_error and seen.startswith("installing") else "")
                           + ")")
            time.sleep(0.1)
    finally:
        if status_client is not None:
            status_client.close()


# -- clusters on real addresses: one network namespace per node (root) ----------------------------------------
def netns_problem() -> str | None:
    """Why this host cannot make namespaced clusters (None: it can): root, and a working ``ip netns``."""
    if os.geteuid() != 0:
        return "not root (network namespaces, a bridge and veth pairs need root)"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        return "iproute2's ip command is not installed"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns list: {exc}"
    if proc.returncode != 0:
        return f"ip netns list: {proc.stderr.strip() or f'exit {proc.returncode}'}"
    return None


def choose_network(wanted: str | None, name: str, say: Callable[[str], None]) -> str:
    """``netns`` or ``loopback``: ``wanted`` if given (netns refused where it cannot work), else netns when this
    host can make namespaces, else loopback; says which and why."""
    from . import _netns

    problem = netns_problem()
    if wanted == "netns":
        if problem:
            raise Unavailable(f"--network netns: {problem}; use --network loopback")
        _netns.netns_name(name, "x")  # a name the namespaces can carry, or InvalidRequest
        say("network: netns (--network netns): each node in its own network namespace on 198.18.0.0/15")
        return "netns"
    if wanted == "loopback":
        say("network: loopback (--network loopback): every node's API on a 127.0.0.1 port")
        return "loopback"
    if problem is None:
        try:
            _netns.netns_name(name, "x")
        except GravenError as exc:
            problem = exc.message
    if problem:
        say(f"network: loopback, every node's API on a 127.0.0.1 port ({problem}; --network netns needs root)")
        return "loopback"
    say("network: netns, each node in its own network namespace on 198.18.0.0/15 (root; --network loopback for "
        "127.0.0.1 ports)")
    return "netns"


def _netns_node_names(name: str, nodes: int, controlplanes: int) -> list[tuple[str, MachineType]]:
    """``(node name, machine type)``: ``NAME-controlplane-1``.., then ``NAME-worker-1``.."""
    return [(f"{name}-controlplane-{i + 1}", "controlplane") for i in range(controlplanes)] + \
        [(f"{name}-worker-{i + 1}", "worker") for i in range(nodes - controlplanes)]


def create_cluster_netns(name: str, *, state: Path | None = None, nodes: int = 3, controlplanes: int = 1,
                         disk: str = "sandbox", port: int = FIRST_PORT, timeout: float = 120.0,
                         health_timeout: float | None = None, merge_into: Path | bool | None = None,
                         say: Callable[[str], None] | None = None, provisioner: str = "process",
                         memory: str | None = None) -> ClusterRecord:
    """Like ``create_cluster``, but every node runs in a network namespace of its own (and a UTS namespace, for
    its hostname) with its own address from 198.18.0.0/15 on the cluster's bridge, its API on ``ADDRESS:port``.
    The machines install at the same time. ``cluster.json`` records ``network: netns``, the subnet and each
    node's namespace and address; ``destroy_cluster`` removes the namespaces and links too."""
    import image

    from . import _netns

    report = say or TimedProgress()
    directory = _cluster_dir(state, name)
    _check_new(name, directory, state, nodes, disk)
    if not 1 <= controlplanes <= nodes:
        raise InvalidRequest(f"--controlplanes {controlplanes}: between 1 and the number of nodes ({nodes})")
    problem = netns_problem()
    if problem:
        raise Unavailable(f"--network netns: {problem}")
    if _netns.show(name):
        raise InvalidRequest(f"cluster {name!r} still has network namespaces on this host (a crashed create?); "
                             f"remove them with: gravenctl cluster destroy --name {name}", cluster=name)
    names = _netns_node_names(name, nodes, controlplanes)
    for node_name, _ in names:
        _netns.netns_name(name, node_name)  # valid names before anything is made
    secrets, files = _write_secrets(name, directory, report, etcd=True)
    record = _new_record(name, directory, disk, files, network="netns", provisioner=provisioner, memory=memory)
    write_cluster(directory, record)  # from here on, destroy finds everything (and the namespaces by their names)
    img = directory / "images" / f"{IMAGE_VERSION}.img"
    report(f"building the {IMAGE_VERSION} image")
    manifest = image.build_image(IMAGE_VERSION, secrets.image_key, img, progress=lambda m: report(f"  image: {m}"))
    record.image, record.image_version = str(img), manifest.version
    vms = record.provisioner == "qemu"
    if vms:
        port = GUEST_API_PORT
    nets = _netns.create(name, nodes, names=[n for n, _ in names], vms=vms)
    record.subnet, record.bridge = str(ipaddress.ip_interface(nets[0].cidr).network), nets[0].bridge
    report(f"network: bridge {nets[0].bridge} ({nets[0].bridge_address}/{nets[0].prefixlen} on this host), "
           f"{nodes} namespace(s)" + (", each with a tap device for its VM's NIC" if vms else "") + ", no route out")
    for net, (node_name, machine_type) in zip(nets, names, strict=True):
        root = directory / "nodes" / node_name
        root.mkdir(parents=True, exist_ok=True)
        record.nodes.append(NodeRecord(name=node_name, type=machine_type, root=str(root),
                                       endpoint=net.endpoint(port), address=net.address, netns=net.netns,
                                       host_veth=net.host_veth, tap=net.tap,
                                       disk=str(root / "disk.img") if disk == "block" else None,
                                       config=str(root / f"{machine_type}.yaml"), log=str(root / "machine.log")))
    write_cluster(directory, record)
    cp_addresses = [n.address for n in record.nodes if n.type == "controlplane" and n.address]
    first_cp = next((n.endpoint for n in record.nodes if n.type == "controlplane"), None)
    for net, node in zip(nets, record.nodes, strict=True):
        # the node's own address goes into certSANs only: the plumbing owns it, so not into machine.network;
        # controlplane nodes run etcd and join it through the other controlplane nodes; a worker's cluster
        # endpoint is the first controlplane node (it publishes its checkpoints to etcd through it)
        machine_type = node.type or "controlplane"
        endpoint = node.endpoint if machine_type == "controlplane" or first_cp is None else first_cp
        cfg = config.default_config(name, f"https://{endpoint}", secrets.ca_crt_pem, secrets.ca_key_pem,
                                    [secrets.image_pub_pem], machine_type=machine_type, hostname=node.name,
                                    install_disk=_install_disk(node, record), install_image=str(img),
                                    etcd_ca=secrets.etcd_ca_pems,
                                    etcd_endpoints=[a for a in cp_addresses if a != node.address])
        if vms:  # the VM owns its NIC: the config names its address (the plumbing only bridges frames to it)
            cfg = _vm_network(cfg, net.cidr)
        text = config.dump_yaml(cfg)
        config.validate(text).unwrap(node.config)
        atomic_write(node.config, text.encode(), 0o600)
        if vms:
            _blank_vm_disk(node, report)
        elif node.disk:
            with open(node.disk, "wb") as f:
                f.truncate(DISK_SIZE)
        # a container machine makes its own UTS namespace, and its supervisor needs the host's /sys (the memory
        # cgroup), which `ip netns exec` would hide behind the namespace's own sysfs: nsenter joins the network alone
        prefix = ["nsenter", f"--net={_netns.NETNS_DIR / net.netns}", "--"] \
            if record.provisioner == "container" else net.exec_prefix()
        extra = ["--tap", str(net.tap), "--address", net.cidr] if vms else []
        node.pid = _start_machine(node, record, health_timeout, prefix=prefix, extra=extra)
        write_cluster(directory, record)
        report(f"{node.name}: machine started in {net.netns} (pid {node.pid}), API on {node.endpoint}; "
               f"log {node.log}")
    ctx = secrets.client_context([n.endpoint for n in record.nodes])
    ctx.nodes = []
    client_cfg = ClientConfig(context=name, contexts={name: ctx})
    client_cfg.save(directory / "gravenconfig")
    errors: list[GravenError] = []

    def install(node: NodeRecord) -> None:
        try:
            _install_node(node, ctx, timeout, report)
        except GravenError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=install, args=(n,), daemon=True) for n in record.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return _announce(record, directory, client_cfg, merge_into, report)


