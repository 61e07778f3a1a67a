"""Memory as this process sees it: how much it may still take (a cgroup's limit
included, which /proc/meminfo ignores) and how much it holds."""
from __future__ import annotations

import sys
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
_NO_LIMIT = 1 << 60   # cgroup v1 writes "no limit" as a number near 2**63


def available_memory() -> int:
    """Bytes this process can still take: the system's available memory, or less where a
    cgroup (a container's limit, a systemd slice) caps it, which /proc/meminfo ignores."""
    available = psutil.virtual_memory().available
    for directory, version in _cgroups():
        try:
            headroom = _cgroup_headroom(directory, version)
        except (OSError, ValueError):
            continue   # unreadable: that level sets no bound we know of
        if headroom is not None:
            available = min(available, headroom)
    return max(available, 0)


def _cgroups() -> list[tuple[Path, int]]:
    """This process's memory cgroup and its ancestors (each may set a limit) as folders,
    with the cgroup version."""
    try:
        found = _memory_cgroup()
    except (OSError, ValueError):
        return []
    if found is None:
        return []
    mount, path, version = found
    # In a container the mount shows the container's own cgroup as its root, while
    # /proc/self/cgroup may give the path on the host: then start from the mount's root.
    directory = mount / path.strip("/")
    if not directory.is_dir():
        directory = mount
    levels = [directory]
    while directory != mount:
        directory = directory.parent
        levels.append(directory)
    return [(d, version) for d in levels]


def _memory_cgroup() -> tuple[Path, str, int] | None:
    """(mount, this process's cgroup path, version) of the memory controller, if any."""
    lines = [line.split(":", 2) for line in PROC_CGROUP.read_text().splitlines()]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / "memory", path, 1
    for hierarchy, _, path in lines:
        if hierarchy == "0" and "memory" in (CGROUP_ROOT / "cgroup.controllers").read_text().split():
            return CGROUP_ROOT, path, 2
    return None


def _cgroup_headroom(directory: Path, version: int) -> int | None:
    """limit - usage + page cache (reclaimable) of one cgroup, or None without a limit."""
    limit_file, usage_file, prefix = (("memory.limit_in_bytes", "memory.usage_in_bytes", "total_")
                                      if version == 1 else ("memory.max", "memory.current", ""))
    limit = (directory / limit_file).read_text().strip()
    if limit == "max" or int(limit) >= _NO_LIMIT:
        return None
    usage = int((directory / usage_file).read_text())
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    cache = int(stat.get(prefix + "active_file", 0)) + int(stat.get(prefix + "inactive_file", 0))
    return int(limit) - usage + cache


def resident_set() -> dict[str, int]:
    """Bytes of this process in RAM now: "resident", and where the OS tells them apart,
    "anonymous" (must stay) and "file_backed" (mapped weights, which the OS may drop)."""
    rss = psutil.Process().memory_info().rss
    if not sys.platform.startswith("linux"):
        return {"resident": rss}
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    # shared memory (tmpfs) cannot be dropped without swap either: it counts as anonymous
    return {"resident": rss, "anonymous": fields["RssAnon"] + fields["RssShmem"],
            "file_backed": fields["RssFile"]}
