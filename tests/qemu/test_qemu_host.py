"""The host's view of a qemu machine without booting one: its command line, how QMP endings are read, and the
guest's tool-free partition discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import StorageError
from image._kernel import Kernel
from node._guest import USER_NET, _first_nic, adopt_installer, platform_address
from node._ports import HOST_VIEW_ENV, host_path
from node._qemu import GuestNic, QemuSpec, padded_copy, qemu_argv, qmp_socket
from node._qmp import EXIT_FAILED, EXIT_POWER_OFF, EXIT_REBOOT, classify
from storage._guest import sysfs_partitions


def _shutdown(reason: str) -> dict[str, object]:
    return {"event": "SHUTDOWN", "data": {"guest": True, "reason": reason}}


def test_classify_endings() -> None:
    assert classify([_shutdown("guest-reset")]).code == EXIT_REBOOT
    assert classify([_shutdown("guest-shutdown")]).code == EXIT_POWER_OFF
    assert classify([{"event": "GUEST_PANICKED", "data": {"action": "pause"}}, _shutdown("guest-panic")]).code \
        == EXIT_FAILED
    assert classify([{"event": "GUEST_PANICKED"}, _shutdown("guest-reset")]).code == EXIT_FAILED  # panic wins
    assert classify([], timed_out=True).reason == "the guest did not come up in time"
    assert classify([], qemu_rc=1).code == EXIT_FAILED
    assert classify([_shutdown("host-qmp-quit")]).code == EXIT_FAILED


def test_qemu_argv(tmp_path: Path) -> None:
    k = Kernel(tmp_path, "linux-image-x", "6.1.1-1", "6.1.0-1-cloud-amd64", "00")
    spec = QemuSpec(k, tmp_path / "initrd", tmp_path / "disk.raw", "BOOT-B", tmp_path / "c.log", tmp_path / "q.sock",
                    ((4000, 50000),))
    argv = qemu_argv(spec)
    append = argv[argv.index("-append") + 1]
    assert "graven.slot=BOOT-B" in append.split() and "console=ttyS0" in append.split()
    assert "-no-reboot" in argv and "pvpanic" in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert f"file={tmp_path / 'disk.raw'},format=raw,if=virtio" in argv[argv.index("-drive") + 1]
    assert "hostfwd=tcp:127.0.0.1:4000-:50000" in argv[argv.index("-netdev") + 1]
    assert str(k.vmlinuz).endswith("boot/vmlinuz-6.1.0-1-cloud-amd64")


def test_bridged_nic(tmp_path: Path) -> None:
    """A VM on a cluster's bridge: its NIC on the namespace's tap device with a MAC made from its address (one per
    node on the bridge), no user-mode network, the address handed to the guest through fw_cfg, which the guest
    reads back to find and address that NIC."""
    nic = GuestNic.parse("tap0", "198.18.7.2/24")
    assert nic.mac == "52:54:c6:12:07:02"
    assert GuestNic.parse("tap0", "198.18.7.3/24").mac != nic.mac
    k = Kernel(tmp_path, "linux-image-x", "6.1.1-1", "6.1.0-1-cloud-amd64", "00")
    net_file = tmp_path / "net.json"
    net_file.write_bytes(nic.to_json())
    spec = QemuSpec(k, tmp_path / "initrd", tmp_path / "disk.raw", "BOOT-A", tmp_path / "c.log", tmp_path / "q.sock",
                    nic=nic, net_file=net_file)
    argv = qemu_argv(spec)
    assert argv[argv.index("-netdev") + 1] == "tap,id=net0,ifname=tap0,script=no,downscript=no"
    assert "virtio-net-pci,netdev=net0,mac=52:54:c6:12:07:02" in argv
    assert f"name=opt/graven/net,file={net_file}" in argv and not any("hostfwd" in a for a in argv)
    assert platform_address(net_file) == ("52:54:c6:12:07:02", "198.18.7.2", 24, None)  # no way out: no gateway
    assert platform_address(tmp_path / "absent") == (None, *USER_NET)
    links = [("lo", "00:00:00:00:00:00"), ("eth1", "52:54:00:00:00:01"), ("eth0", "52:54:C6:12:07:02")]
    assert _first_nic(links, nic.mac) == "eth0" and _first_nic(links[:2], nic.mac) is None
    assert _first_nic([("sit0", ""), *links[:2]]) == "eth1"
    for tap, cidr in (("tap0", "198.18.7.0/24"), ("tap0", "198.18.7.2"), ("tap0", "nope"), ("", "198.18.7.2/24"),
                      ("x" * 16, "198.18.7.2/24")):
        with pytest.raises(StorageError):
            GuestNic.parse(tap, cidr)


def test_installer_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank disk's first boot: the installer image as a second, read-only virtio disk padded to whole sectors,
    the initramfs told to mount that whole disk; inside, the image's own bytes (its length from boot.json) reached
    at its host path, which a config's machine.install.image names."""
    image_file = tmp_path / "images" / "v1.img"
    image_file.parent.mkdir()
    image_file.write_bytes(b"squashfs" + bytes(range(256)) * 4 + b"trailer")  # not a whole number of sectors
    size = image_file.stat().st_size
    disk = padded_copy(image_file, tmp_path / "installer.raw")
    assert disk.stat().st_size % 512 == 0 and disk.read_bytes()[:size] == image_file.read_bytes()
    assert set(disk.read_bytes()[size:]) == {0}
    k = Kernel(tmp_path, "linux-image-x", "6.1.1-1", "6.1.0-1-cloud-amd64", "00")
    spec = QemuSpec(k, tmp_path / "initrd", tmp_path / "disk.raw", "installer", tmp_path / "c.log",
                    tmp_path / "q.sock", installer=disk)
    argv = qemu_argv(spec)
    append = argv[argv.index("-append") + 1].split()
    assert "graven.root=vdb" in append and not any(a.startswith("graven.slot=") for a in append)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith(f"file={tmp_path / 'disk.raw'},") and drives[1].endswith(",readonly=on")
    monkeypatch.delenv(HOST_VIEW_ENV, raising=False)
    view = tmp_path / "view"
    copied = adopt_installer(str(image_file), size, device=disk, view=view)
    assert copied.read_bytes() == image_file.read_bytes()
    assert host_path(image_file) == copied  # what the install sequence opens for machine.install.image
    with pytest.raises(OSError, match="short"):
        adopt_installer(str(image_file), disk.stat().st_size + 1, device=disk, view=tmp_path / "v2")


def test_qmp_socket_path_fits(tmp_path: Path) -> None:
    assert qmp_socket(tmp_path / "run") == tmp_path / "run" / "qmp.sock"
    deep = tmp_path / ("x" * 60) / "clusters" / "q1" / "nodes" / "q1-controlplane-1" / "run"
    far = qmp_socket(deep)
    assert len(str(far)) < 108 and far != qmp_socket(deep.with_name("run2"))  # one per machine


def test_sysfs_partitions(tmp_path: Path) -> None:
    for i, (name, start, size) in enumerate((("EFI", 2048, 8192), ("BOOT-A", 10240, 65536)), start=1):
        d = tmp_path / "vda" / f"vda{i}"
        d.mkdir(parents=True)
        (d / "uevent").write_text(f"MAJOR=254\nMINOR={i}\nDEVNAME=vda{i}\nDEVTYPE=partition\nPARTN={i}\n"
                                  f"PARTNAME={name}\n")
        (d / "start").write_text(f"{start}\n")
        (d / "size").write_text(f"{size}\n")
    (tmp_path / "vda" / "queue").mkdir()
    (tmp_path / "vda" / "vda3").mkdir()  # a partition without a GPT name is left out
    (tmp_path / "vda" / "vda3" / "uevent").write_text("DEVNAME=vda3\n")
    parts = sysfs_partitions(Path("/dev/vda"), sys_block=tmp_path)
    assert parts == {"EFI": ("/dev/vda1", 2048 * 512, 8192 * 512), "BOOT-A": ("/dev/vda2", 10240 * 512, 65536 * 512)}
