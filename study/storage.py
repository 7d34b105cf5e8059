"""Is the study's storage path shared by every node of the Ray cluster?

A study keeps its run state under `storage_path`: Tune's experiment state, every Ray Train
checkpoint, the phase cache and the embedded model. On a multi-node cluster a trial (or a Train
worker restarted after a failure) can run on any node, so a folder that exists only on the
driver's machine would lose checkpoints and phase-2 results the moment a trial moves. Such a
study is refused before anything is written, unless the path is known to be shared:

- a URI (`s3://...`, `gs://...`): every node reaches it;
- a path on a network file system mount (NFS/EFS, CIFS, Lustre, CephFS, GlusterFS, a FUSE
  bucket mount, ...), read from /proc/mounts;
- or the user says it is shared: XSTILTS_STORAGE_SHARED=1 in the driver's environment (e.g. a
  host path bind-mounted from the same network disk on every node, or every "node" on one
  machine as in a simulated cluster), which this module cannot see.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from xstilts.study.config import ConfigError

SHARED_ENV = "XSTILTS_STORAGE_SHARED"

# File system types (the third field of /proc/mounts) that every machine mounting them sees alike.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "glusterfs", "fuse.glusterfs", "gpfs", "beegfs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3", "fuse.goofys", "fuse.rclone", "fuse.juicefs",
    "fuse.sshfs", "9p", "afs", "ocfs2", "gfs2", "wekafs", "fuse.weka", "alluxio", "fuse.alluxio-fuse",
})


@dataclass(frozen=True)
class MountPoint:
    path: str
    fs_type: str


def declared_shared() -> bool:
    """Whether the user declared the storage path shared (XSTILTS_STORAGE_SHARED=1/true/yes)."""
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mount_of(path: str, mounts_file: str = "/proc/mounts") -> MountPoint | None:
    """The mount that holds `path` (the longest mount point above it), or None if unknown."""
    try:
        with open(mounts_file) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    # The path may not exist yet (it is created later): its nearest existing ancestor decides.
    probe = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
    best: MountPoint | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces and the like as octal (\040).
        point = fields[1].encode().decode("unicode_escape")
        inside = probe == point or probe.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.path)):
            best = MountPoint(point, fields[2])
    return best


def is_shared_location(storage_path: str) -> bool:
    """A URI, or a local path on a network file system."""
    if "://" in storage_path:
        return True
    mount = mount_of(storage_path)
    return mount is not None and mount.fs_type in NETWORK_FS_TYPES


def alive_node_count() -> int:
    """Alive nodes of the Ray cluster this process is connected to."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_storage_shared(storage_path: str, nodes: int) -> None:
    """Refuse (ConfigError) a local, non-shared storage path on a cluster of more than one node."""
    if nodes <= 1 or declared_shared() or is_shared_location(storage_path):
        return
    mount = mount_of(storage_path)
    where = f" (on a local {mount.fs_type} file system)" if mount else ""
    raise ConfigError(
        "storage_path",
        f"{storage_path!r}{where} is not shared, but the Ray cluster has {nodes} nodes: trials and restarted "
        f"workers on other nodes would lose its checkpoints and phase cache",
        f"use a path every node mounts (NFS/EFS) or s3://bucket/prefix, or set {SHARED_ENV}=1 if this path "
        f"is shared by all nodes",
    )
