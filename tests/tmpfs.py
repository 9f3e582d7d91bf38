"""Small size-limited tmpfs data directories for fault tests (disk full, a store that
cannot write). Mounting needs root and the mount syscall, as CI has; without them the
tests that ask for a disk fail with the reason rather than skip.

``mount_disk`` is a fixture (registered in tests/conftest.py): ``mount_disk(size=...)``
returns a :class:`Disk`, whose servers are killed and which is unmounted at the end.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serverproc import Server

DISK_BYTES = 64 * 1024 * 1024


class Disk:
    """A tmpfs mounted for one test: the server's data directory, and its ballast."""

    def __init__(self, mount_point: Path) -> None:
        self.mount_point = mount_point
        self.ballast: list[Path] = []
        self.servers: list[Server] = []
        self.logs: list[Path] = []

    @property
    def data_dir(self) -> Path:
        # The mount point itself: Server puts its log beside the data dir, so the log
        # is written to the test's tmp_path, where there is room.
        return self.mount_point

    def free_bytes(self) -> int:
        stat = os.statvfs(self.mount_point)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Write a ballast file of zeros until ``leave`` bytes (or none) are left."""
        path = self.mount_point / f"ballast-{len(self.ballast)}.bin"
        self.ballast.append(path)
        zeros = memoryview(bytes(1 << 20))
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while (room := self.free_bytes() - leave) > 0:
                try:
                    written += os.write(fd, zeros[: min(len(zeros), room)])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # the server took the rest meanwhile: full
        finally:
            os.close(fd)
        return written

    def fill_inodes(self) -> int:
        """Create empty files until the filesystem has no inode left."""
        directory = self.mount_point / "ballast-inodes"
        directory.mkdir()
        self.ballast.append(directory)
        for count in range(1_000_000):
            try:
                (directory / f"{count}").touch()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return count
        raise AssertionError("the tmpfs never ran out of inodes")

    def free(self) -> None:
        """Delete the ballast: the space (and inodes) come back at once."""
        for path in self.ballast:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        self.ballast.clear()

    def start_server(self, *args: str) -> Server:
        server = Server(self.data_dir, args=list(args))
        self.servers.append(server)
        return self.restart(server)

    def restart(self, server: Server) -> Server:
        server.start()
        assert server.log_path is not None
        self.logs.append(server.log_path)
        return server


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def mount_disk(tmp_path: Path) -> Iterator[Callable[..., Disk]]:
    """Mount small tmpfs data directories; kill their servers and unmount at the end."""
    disks: list[Disk] = []

    def mount(*, size: int = DISK_BYTES, nr_inodes: int | None = None) -> Disk:
        if os.geteuid() != 0:
            pytest.fail(
                "these tests mount a tmpfs and need root (CI runs them as root); "
                f"running as uid {os.geteuid()}",
                pytrace=False,
            )
        mount_point = tmp_path / f"disk{len(disks)}"
        mount_point.mkdir()
        options = f"size={size},mode=0755" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
        mounted = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point))
        if mounted.returncode != 0:
            pytest.fail(
                f"cannot mount a tmpfs ({options}) at {mount_point}: "
                f"{(mounted.stderr or mounted.stdout).strip()} (these tests need root "
                "and the mount syscall; CI runs them as root)",
                pytrace=False,
            )
        disk = Disk(mount_point)
        disks.append(disk)
        assert os.path.ismount(mount_point), mount_point
        assert disk.free_bytes() <= size, "the tmpfs is not size-limited"
        return disk

    try:
        yield mount
    finally:
        problems = []
        for disk in disks:
            for server in disk.servers:
                server.kill()
            if _run("umount", str(disk.mount_point)).returncode != 0:
                lazy = _run("umount", "-l", str(disk.mount_point))
                if lazy.returncode != 0:
                    problems.append(f"{disk.mount_point}: {lazy.stderr.strip()}")
        assert not problems, f"could not unmount: {problems}"
