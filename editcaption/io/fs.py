"""Local paths and object-store URIs through one fsspec interface.

Readers list files on the driver and hand URIs to Ray tasks, which open them again with the same
`storage_options`, so file bytes go straight from storage to the worker that needs them.
"""

from __future__ import annotations

import posixpath
from typing import Any

import fsspec
import pyarrow.fs
from fsspec.implementations.local import LocalFileSystem


def open_fs(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding `uri` and the path inside it."""
    return fsspec.core.url_to_fs(uri, **(storage_options or {}))


def to_uri(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """A URI for `path` in the style the user wrote `like` in: plain local paths stay plain."""
    if isinstance(fs, LocalFileSystem) and "://" not in like:
        return path
    return fs.unstrip_protocol(path)


def is_uri(path: str) -> bool:
    return "://" in path


def join(base_uri: str, relative: str) -> str:
    """Resolve a manifest entry: absolute paths and URIs as given, others relative to `base_uri`."""
    if is_uri(relative) or relative.startswith("/"):
        return relative
    return posixpath.join(base_uri, relative)


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = open_fs(uri, storage_options)
    return fs.cat_file(path)


def arrow_fs(fs: fsspec.AbstractFileSystem) -> pyarrow.fs.FileSystem | None:
    """What to pass as Ray's `filesystem=`: None for local disks, else the fsspec filesystem wrapped."""
    if isinstance(fs, LocalFileSystem):
        return None
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def stem(path: str) -> str:
    """File name without its last extension: `a/b/x.v2.png` -> `x.v2`."""
    return posixpath.splitext(posixpath.basename(path))[0]
