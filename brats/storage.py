"""Storage: one function turns a URI into a filesystem; writes are all-or-nothing.

A :class:`Location` is a URI plus the S3 endpoint to reach it. It is small and plain, so it
travels to Ray tasks and actors, where :meth:`Location.filesystem` builds (or reuses, through
fsspec's instance cache) the filesystem. Credentials never live in a Location: s3fs finds them
the standard way (environment, shared config, instance profile), so they never reach a
config, a log, a Ray runtime_env or a report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fsspec

if TYPE_CHECKING:
    import pyarrow.fs

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
S3_ENDPOINT_HELP = "S3-compatible endpoint URL (MinIO, moto); default $AWS_ENDPOINT_URL or AWS"
S3_RETRIES = 10
"""Attempts per S3 call. botocore's adaptive mode backs off on 503 SlowDown and throttling."""


class StorageError(OSError):
    """A storage URI that cannot be used, or an object that is too large to read."""


@dataclass(frozen=True)
class Location:
    """A folder in local storage or in an S3 bucket.

    Attributes:
        protocol: ``"file"`` or ``"s3"``.
        path: the path as the filesystem sees it: an absolute local path, or ``bucket/prefix``.
        s3_endpoint: endpoint URL for S3-compatible stores (MinIO, moto); ``None`` for AWS.
    """

    protocol: str
    path: str
    s3_endpoint: str | None = None

    @property
    def uri(self) -> str:
        return self.path if self.protocol == "file" else f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.uri

    def join(self, *parts: str) -> str:
        """Filesystem path of ``parts`` under this location (parts are never absolute)."""
        for part in parts:
            if part.startswith("/") or ".." in part.split("/"):
                raise StorageError(f"unsafe path component {part!r} under {self.uri}")
        return posixpath.join(self.path, *parts)

    def child(self, *parts: str) -> Location:
        return Location(self.protocol, self.join(*parts), self.s3_endpoint)

    def uri_of(self, path: str) -> str:
        """The URI of a filesystem path that lies in this location's filesystem."""
        return path if self.protocol == "file" else f"{self.protocol}://{path}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        if self.protocol == "file":
            return fsspec.filesystem("file", auto_mkdir=True)
        client_kwargs: dict[str, Any] = {}
        if self.s3_endpoint:
            client_kwargs["endpoint_url"] = self.s3_endpoint
        return fsspec.filesystem(
            "s3",
            client_kwargs=client_kwargs,
            config_kwargs={"retries": {"max_attempts": S3_RETRIES, "mode": "adaptive"}},
            # Listings change under a nightly job (records appear); never serve stale ones.
            use_listings_cache=False,
        )

    def pyarrow_filesystem(self) -> pyarrow.fs.FileSystem:
        """The same storage as a pyarrow filesystem, for Ray Data and Parquet."""
        import pyarrow.fs

        if self.protocol == "file":
            return pyarrow.fs.LocalFileSystem()
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.filesystem()))


def resolve(uri: str, *, s3_endpoint: str | None = None) -> Location:
    """Turn ``/dir``, ``relative/dir``, ``file:///dir`` or ``s3://bucket/prefix`` into a Location.

    The S3 endpoint is ``s3_endpoint`` if given, else ``$AWS_ENDPOINT_URL`` (pyarrow ignores
    that variable, so it is resolved here once and passed on explicitly).
    """
    if not uri:
        raise StorageError("empty storage URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = parts.path if scheme == "file" else uri
        return Location("file", os.path.abspath(os.path.expanduser(local)))
    if scheme in ("s3", "s3a"):
        if parts.username or parts.password:
            raise StorageError("credentials in a storage URI are not accepted; use the environment")
        if not parts.netloc:
            raise StorageError(f"no bucket in {uri!r}")
        path = posixpath.normpath(parts.netloc + "/" + parts.path.lstrip("/")).rstrip("/")
        endpoint = s3_endpoint or os.environ.get(ENDPOINT_ENV) or None
        return Location("s3", path, endpoint)
    raise StorageError(f"unsupported storage scheme {scheme!r} in {redact(uri)}")


def redact(uri: str) -> str:
    """A URI fit for logs: any ``user:password@`` and query string removed."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old object, or all of the new one.

    Local files go to a temporary name in the same folder, are fsynced, then renamed over the
    target. S3 objects are sent in one call (a PUT, or a multipart upload that S3 publishes
    only on completion); the bytes are built before the call, so an exception while building
    them leaves nothing at the key.
    """
    if _is_local(fs):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            # mkstemp makes the file private (0600); give it the mode open() would have.
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def json_bytes(document: Mapping[str, Any]) -> bytes:
    """A JSON document as brats stores it: keys sorted, indented, newline-terminated, and never
    NaN or infinity (``ValueError``), so the same document always gives the same bytes."""
    return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def read_bytes(fs: fsspec.AbstractFileSystem, path: str, *, max_bytes: int) -> bytes:
    """Read a whole object, refusing one larger than ``max_bytes`` before reading it."""
    size = fs.size(path)
    if size is not None and size > max_bytes:
        raise StorageError(f"{path}: {size} bytes is over the limit of {max_bytes}")
    # read(n) reserves n bytes up front: ask for what the object holds, plus one to notice
    # an object that grew past the limit since it was sized.
    want = max_bytes if size is None else min(int(size), max_bytes)
    with fs.open(path, "rb") as fh:
        data: bytes = fh.read(want + 1)
    if len(data) > max_bytes:
        raise StorageError(f"{path}: more than {max_bytes} bytes")
    return data


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_partial_writes(fs: fsspec.AbstractFileSystem, folder: str) -> int:
    """Remove what :func:`write_bytes_atomic` leaves in ``folder`` when its process is killed
    mid-write (``.<name>.<random>.tmp``, never seen as the object itself); return how many.

    Only for a folder no other writer is writing to: a job calls it as it starts. S3 keeps
    no partial objects, so only local folders have any.
    """
    if not _is_local(fs) or not os.path.isdir(folder):
        return 0
    partial = [
        name for name in os.listdir(folder) if name.startswith(".") and name.endswith(".tmp")
    ]
    for name in partial:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    return len(partial)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol
    names = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in names or "local" in names
