"""Signed images, their verification, A/B slots and the bootloader's decisions."""

import typing

import lazy

from ._format import FORMAT_VERSION as FORMAT_VERSION
from ._format import Manifest as Manifest
from ._format import Trailer as Trailer
from ._keys import generate_key as generate_key
from ._keys import load_public_key as load_public_key
from ._keys import load_signing_key as load_signing_key
from ._keys import public_key_pem as public_key_pem
from ._keys import write_keypair as write_keypair
from ._slots import InstallPlan as InstallPlan
from ._slots import InstallResult as InstallResult
from ._slots import install as install
from ._slots import plan_install as plan_install
from ._stamp import CODE_DIR as CODE_DIR
from ._stamp import BuildInfo as BuildInfo
from ._stamp import build_info as build_info
from ._stamp import fault_point as fault_point
from ._stamp import running_version as running_version
from ._verify import ImageInfo as ImageInfo
from ._verify import VerifiedImage as VerifiedImage
from ._verify import inspect as inspect
from ._verify import verify as verify
from ._verify import verify_slot as verify_slot

__all__ = [
    "CODE_DIR",
    "FORMAT_VERSION",
    "BuildInfo",
    "ImageInfo",
    "InstallPlan",
    "InstallResult",
    "Kernel",
    "Manifest",
    "Trailer",
    "VerifiedImage",
    "build_image",
    "build_info",
    "build_initramfs",
    "fault_point",
    "find_kernel",
    "generate_key",
    "inspect",
    "install",
    "load_public_key",
    "load_signing_key",
    "plan_install",
    "public_key_pem",
    "running_version",
    "verify",
    "verify_slot",
    "write_keypair",
]

if typing.TYPE_CHECKING:
    from ._build import build_image as build_image
    from ._initramfs import build_initramfs as build_initramfs
    from ._kernel import Kernel as Kernel
    from ._kernel import find_kernel as find_kernel

# what only the qemu provisioner needs, and the builder (its runtime layer's metadata and tomllib: ~20 ms), which
# no node (supervisor or agent) uses
_LAZY: dict[str, str] = {
    "build_image": "_build",
    "Kernel": "_kernel",
    "build_initramfs": "_initramfs",
    "find_kernel": "_kernel",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())
