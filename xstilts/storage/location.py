"""Storage locations: a local path or a URI, read and written through `pyarrow.fs`.

A location is a string, as users write it in `storage_path`: `/abs/path`, `relative/path`,
`s3://bucket/prefix`, `gs://bucket/prefix` (or any URI pyarrow knows). Nothing here joins a URI
with `os.path` or `Path` (that turned `s3://b/x` into a local folder `s3:/b/x`): `child` joins
with "/" for URIs and `os.path.join` for local paths only.

Object stores are configured where every AWS tool reads its configuration, so a user sets them
once: credentials from the default chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the
profile files, an instance profile), the region from `AWS_REGION`/`AWS_DEFAULT_REGION`, and an
S3-compatible endpoint (MinIO, SeaweedFS, Ceph, R2) from `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL`. Credentials are never read into this module, so they cannot be logged.

Object stores have no rename: a single object becomes visible whole when its upload completes
(one PUT or a completed multipart upload), which is what `write_bytes` relies on. Folders are
written file by file; whoever needs a folder to appear atomically (the phase cache) writes a
manifest last and trusts only folders whose manifest verifies.

Models, checkpoints and phase-2 encoders that live in an object store are read by transformers
from a local folder: `local_copy` downloads one once per node into the node's temporary cache
(`node_cache_dir`), the only place a node's disk holds study data when storage is remote.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs

# The phase cache's manifest file name: `local_copy` verifies a folder that carries one.
MANIFEST = "xstilts_cache_manifest.json"
NODE_CACHE_ENV = "XSTILTS_NODE_CACHE"


class StorageError(RuntimeError):
    """A storage location that cannot be used: `message` says why, `fix` what to do."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message if not fix else f"{message}; {fix}")
        self.message, self.fix = message, fix


def is_uri(ref: str | os.PathLike) -> bool:
    """A URI with a scheme (`s3://...`); `file://` counts as local."""
    ref = os.fspath(ref)
    return "://" in ref and not ref.startswith("file://")


def _local(ref: str) -> str:
    if ref.startswith("file://"):
        ref = urlsplit(ref).path
    return os.path.abspath(os.path.expanduser(ref))


def child(base: str, *parts: str) -> str:
    """`base` joined with `parts`: with "/" for a URI (keeping its scheme), os.path for a path."""
    base = os.fspath(base)
    parts = tuple(p.strip("/") for p in parts if p)
    if is_uri(base):
        return "/".join((base.rstrip("/"),) + parts) if parts else base
    return os.path.join(base, *parts)


def _s3_endpoint() -> tuple[str | None, str]:
    """(host:port or None, scheme) of an S3-compatible endpoint from the AWS environment."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, "https"
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc, parts.scheme or "https"


@functools.lru_cache(maxsize=16)
def _s3_filesystem(endpoint: str | None, scheme: str, region: str | None) -> pafs.S3FileSystem:
    # Bounded waits: an unreachable endpoint fails in seconds instead of retrying for minutes.
    options = dict(connect_timeout=5, request_timeout=60,
                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=4))
    if endpoint:
        options.update(endpoint_override=endpoint, scheme=scheme)
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def filesystem(ref: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a location."""
    ref = os.fspath(ref)
    if not is_uri(ref):
        return pafs.LocalFileSystem(), _local(ref)
    parts = urlsplit(ref)
    if parts.scheme in ("s3", "s3a") and not parts.query:
        endpoint, scheme = _s3_endpoint()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3_filesystem(endpoint, scheme, region), (parts.netloc + parts.path).rstrip("/")
    # gs://, hdfs://, or s3:// with explicit options in its query (?endpoint_override=...).
    fs, path = pafs.FileSystem.from_uri(ref)
    return fs, path.rstrip("/")


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """The location string of `path` inside `fs` (e.g. a Ray checkpoint's filesystem and path)."""
    if isinstance(fs, pafs.LocalFileSystem) or fs.type_name == "local":
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path.lstrip('/')}"


@dataclass(frozen=True)
class Location:
    """A file or folder in storage, by its location string."""

    ref: str

    def __post_init__(self):
        ref = os.fspath(self.ref)
        object.__setattr__(self, "ref", ref if is_uri(ref) else _local(ref))

    def __str__(self) -> str:
        return self.ref

    @property
    def remote(self) -> bool:
        return is_uri(self.ref)

    def child(self, *parts: str) -> "Location":
        return Location(child(self.ref, *parts))

    @property
    def name(self) -> str:
        return posixpath.basename(self.ref.rstrip("/")) if self.remote else os.path.basename(self.ref)

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return filesystem(self.ref)

    def info(self) -> pafs.FileInfo:
        fs, path = self._fs()
        return fs.get_file_info(path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def read_bytes(self) -> bytes:
        """The file's bytes; FileNotFoundError when there is none."""
        fs, path = self._fs()
        try:
            with fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as error:
            if not self.is_file():
                raise FileNotFoundError(self.ref) from error
            raise

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Write the file so that a reader sees all of it or none: locally a temporary file
        renamed into place, in an object store one upload (objects appear when complete)."""
        fs, path = self._fs()
        if not self.remote:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                                 dir=os.path.dirname(path))
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it owner-only; others share caches
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
            return
        with fs.open_output_stream(path) as out:
            out.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def files(self) -> dict[str, int]:
        """{relative path: size} of every file below this folder ({} when there is none)."""
        return {name: size for name, (size, _) in self.file_times().items()}

    def file_times(self) -> dict[str, tuple[int, float]]:
        """{relative path: (size, modification time as a Unix timestamp)} of every file below."""
        fs, path = self._fs()
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return {}
        prefix = path.rstrip("/") + "/"
        return {info.path[len(prefix):]: (info.size, info.mtime.timestamp() if info.mtime else 0.0) for info in infos
                if info.type == pafs.FileType.File and info.path.startswith(prefix)}

    def children(self) -> list[str]:
        """Names directly below this folder."""
        fs, path = self._fs()
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(info.path.rstrip("/")) for info in infos)

    def delete(self) -> None:
        """Remove the file or folder (and everything below it); nothing if absent."""
        fs, path = self._fs()
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            fs.delete_file(path)
        elif kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif self.remote:  # an object store "folder" may exist only as keys below it
            for name in self.files():
                fs.delete_file(f"{path}/{name}")

    def upload(self, local_folder: str | os.PathLike, skip: frozenset[str] = frozenset()) -> None:
        """Copy a local folder's files here (file by file; see the module docstring)."""
        fs, path = self._fs()
        local_folder = os.fspath(local_folder)
        for root, _, names in os.walk(local_folder):
            for name in sorted(names):
                source = os.path.join(root, name)
                relative = os.path.relpath(source, local_folder).replace(os.sep, "/")
                if relative in skip:
                    continue
                destination = f"{path}/{relative}"
                if not self.remote:
                    os.makedirs(os.path.dirname(destination), exist_ok=True)
                pafs.copy_files(source, destination, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=fs)

    def download(self, local_folder: str | os.PathLike) -> None:
        """Copy this folder's files into a local folder."""
        fs, path = self._fs()
        os.makedirs(local_folder, exist_ok=True)
        for relative in self.files():
            destination = os.path.join(os.fspath(local_folder), *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            pafs.copy_files(f"{path}/{relative}", destination, source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder: str | os.PathLike, skip: frozenset[str] = frozenset({MANIFEST})) -> dict[str, str]:
    """{relative path: SHA-256} of every file below a local folder."""
    sums = {}
    folder = os.fspath(folder)
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            relative = os.path.relpath(full, folder).replace(os.sep, "/")
            if relative not in skip:
                sums[relative] = file_sha256(full)
    return dict(sorted(sums.items()))


def publish(local_folder: str | os.PathLike, ref: str, manifest: dict | None = None) -> dict:
    """Copy a local folder to `ref` so that it appears complete or not at all: any earlier files
    there are removed, the files are uploaded, and a manifest of their checksums and sizes is
    written last. Readers trust the folder only when that manifest verifies (`local_copy`).
    Returns the manifest (`manifest`'s fields plus `checksums` and `sizes`)."""
    local_folder = os.fspath(local_folder)
    checksums = folder_checksums(local_folder)
    sizes = {name: os.path.getsize(os.path.join(local_folder, *name.split("/"))) for name in checksums}
    manifest = {**(manifest or {}), "checksums": checksums, "sizes": sizes}
    location = Location(ref)
    location.delete()
    location.upload(local_folder, skip=frozenset({MANIFEST}))
    location.child(MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
    return manifest


def published(ref: str) -> bool:
    """Whether `ref` holds a folder written by `publish` whose files are all there (by size)."""
    location = Location(ref)
    try:
        manifest = json.loads(location.child(MANIFEST).read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    files = {k: v for k, v in location.files().items() if k != MANIFEST}
    return files == manifest.get("sizes")


def node_cache_dir() -> str:
    """This node's temporary cache of downloaded folders (XSTILTS_NODE_CACHE, else the temp dir)."""
    configured = os.environ.get(NODE_CACHE_ENV)
    if configured:
        return configured
    return os.path.join(tempfile.gettempdir(), f"xstilts-node-cache-{os.getuid()}")


def local_copy(ref: str) -> str:
    """A local folder with the contents of the folder at `ref`, downloaded once per node.

    A folder that carries a phase-cache manifest is verified against its checksums (a
    StorageError names the file that does not match); the copy is keyed by the location and
    that manifest, so an entry rebuilt under the same location is downloaded again.
    """
    from filelock import FileLock

    location = Location(ref)
    manifest = location.child(MANIFEST)
    try:
        manifest_bytes = manifest.read_bytes()
    except FileNotFoundError:
        manifest_bytes = b""
    key = hashlib.sha256(location.ref.encode() + b"\0" + manifest_bytes).hexdigest()[:24]
    root = os.path.join(node_cache_dir(), "folders")
    target = os.path.join(root, f"{location.name[:40]}-{key}")
    if os.path.isdir(target):
        return target
    os.makedirs(root, exist_ok=True)
    with FileLock(target + ".lock"):
        if os.path.isdir(target):
            return target
        staging = tempfile.mkdtemp(prefix=".download-", dir=root)
        try:
            location.download(staging)
            if not os.listdir(staging):
                raise StorageError(f"{location.ref} holds no files")
            if manifest_bytes:
                expected = json.loads(manifest_bytes)["checksums"]
                actual = folder_checksums(staging)
                if actual != expected:
                    bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
                    raise StorageError(f"{location.ref}: files do not match the manifest ({', '.join(bad[:5])})")
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def to_local(ref: str) -> str:
    """`ref` itself unless it is a URI; a URI becomes its node-local copy (`local_copy`).

    Model references that are neither (an HF hub name such as `xlm-roberta-large`) pass
    through unchanged.
    """
    return local_copy(ref) if is_uri(ref) else ref


def probe(ref: str) -> None:
    """Check that a storage location can be listed, written and deleted (StorageError if not).

    For an object store this reaches the endpoint with the credentials every node will use and
    writes (then deletes) one small object, so a wrong endpoint, wrong credentials or a missing
    bucket show before a study starts.
    """
    location = Location(ref)
    if not location.remote:
        return
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f" (endpoint {endpoint})" if endpoint and location.ref.startswith("s3") else ""
    try:
        fs, path = location._fs()
    except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad URI
        raise StorageError(f"{ref!r} is not a storage location pyarrow can open ({_first_line(error)})",
                           "write s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a local path") from None
    bucket = path.split("/", 1)[0]
    try:
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageError(f"bucket {bucket!r} of {ref!r} does not exist{where}",
                               f"create it (e.g. `aws s3 mb s3://{bucket}`) or fix the bucket name")
        existed = fs.get_file_info(path).type != pafs.FileType.NotFound
        marker = location.child(f".xstilts-probe-{uuid.uuid4().hex[:12]}")
        marker.write_bytes(b"probe")
        marker.delete()
        if not existed and not location.children():
            # pyarrow keeps an emptied "folder" as a marker object: a refused study leaves nothing.
            fs.delete_dir(path)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the study cannot use it
        text = _first_line(error)
        if any(s in text for s in ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY", "SIGNATURE", "Forbidden", "403")):
            fix = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the instance profile) for this bucket"
        elif any(s in text for s in ("NETWORK_CONNECTION", "connect", "resolve", "Timeout", "timed out")):
            fix = "check AWS_ENDPOINT_URL (an S3-compatible server) or the network to the object store"
        else:
            fix = "check the bucket, the credentials and AWS_ENDPOINT_URL"
        raise StorageError(f"cannot write to {ref!r}{where}: {text}", fix) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
