"""An image streamed to ``Upgrade``, spooled on EPHEMERAL within the limits: size (``upload_bytes``), free space
left (``upload_free_bytes``, checked before the first byte is written and as chunks arrive) and URL schemes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from config.limits import LIMITS, Limits
from errors import DiskFull, InvalidRequest, LimitExceeded, TooLarge

from ._pb import machine_pb2 as pb

__all__ = ["Upload", "check_url"]


def check_url(url: str, limits: Limits = LIMITS) -> None:
    """A URL the node may fetch an image from: one of ``url_schemes``, or an absolute path on the node."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if not scheme and url.startswith("/"):
        return
    if scheme not in limits.url_schemes:
        raise LimitExceeded(f"upgrade URL scheme {scheme + ':' if scheme else '(none)'} is not allowed; use "
                            f"{' or '.join(s + '://' for s in limits.url_schemes)} (limit url_schemes)",
                            limit="url_schemes", value=scheme, max=list(limits.url_schemes))


class Upload:
    """The spooled upload of one ``Upgrade`` call; ``discard`` removes it (a refused or failed upgrade)."""

    def __init__(self, spool_dir: Path, limits: Limits = LIMITS) -> None:
        self.dir = spool_dir
        self.limits = limits
        self.path: Path | None = None
        self.url = ""
        self.stage = False
        self.force = False
        self.size = 0
        self.declared = 0

    async def receive(self, messages: AsyncIterator[pb.UpgradeRequest]) -> None:
        with contextlib.ExitStack() as stack:
            f: IO[bytes] | None = None
            async for msg in messages:
                if msg.url and not self.url:
                    check_url(msg.url, self.limits)
                    self.url = msg.url
                self.stage = self.stage or msg.stage
                self.force = self.force or msg.force
                if msg.total_size and not self.declared:
                    self.declared = msg.total_size
                    self._check_room(msg.total_size)
                if not msg.chunk:
                    continue
                if f is None:
                    await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
                    f = stack.enter_context(tempfile.NamedTemporaryFile(dir=self.dir, prefix="upgrade-",
                                                                        suffix=".img", delete=False))
                    self.path = Path(f.name)
                self.size += len(msg.chunk)
                self._check_room(self.size if not self.declared else max(self.declared, self.size),
                                 written=self.size - len(msg.chunk))
                await asyncio.to_thread(f.write, msg.chunk)
        if self.declared and self.path is not None and self.size != self.declared:
            raise InvalidRequest(f"the upload ended after {self.size} of the {self.declared} bytes it announced "
                                 f"(total_size): truncated", received=self.size, total_size=self.declared)
        if self.url and self.path is not None:
            raise InvalidRequest("upgrade takes an image (streamed chunks) or a url, not both")
        if not self.url and self.path is None:
            raise InvalidRequest("upgrade needs an image (streamed chunks) or a url")

    @property
    def source(self) -> str:
        return self.url or str(self.path)

    def _check_room(self, size: int, written: int = 0) -> None:
        lim = self.limits
        if size > lim.upload_bytes:
            raise TooLarge(f"the upload is {size} bytes; the limit is {lim.upload_bytes} (limit upload_bytes)",
                           limit="upload_bytes", value=size, max=lim.upload_bytes)
        probe = self.dir if self.dir.exists() else self.dir.parent
        st = os.statvfs(probe)
        free = st.f_bavail * st.f_frsize
        if free - (size - written) < lim.upload_free_bytes:
            raise DiskFull(f"the upload ({size} bytes) would leave less than {lim.upload_free_bytes} bytes free on "
                           f"EPHEMERAL ({free} free before it; limit upload_free_bytes)",
                           limit="upload_free_bytes", value=free - (size - written), max=lim.upload_free_bytes)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
