"""Image files under the server's data folder, and nothing outside it.

A requested path is refused when it is absolute, names a parent (`..`), holds a NUL or backslash, is
not an image file, or resolves (following symlinks) to somewhere outside the data folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class UnsafePath(ValueError):
    """A path that would leave the data folder or is not an image there; the message says which rule."""


def resolve_image(data_dir: str | Path, relative: str) -> Path:
    """The file `relative` names inside `data_dir`, after every check; UnsafePath or FileNotFoundError."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise UnsafePath("image path is empty or holds a NUL or backslash")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise UnsafePath("image path must be relative to the data folder")
    if ".." in pure.parts:
        raise UnsafePath("image path may not contain '..'")
    if pure.suffix.lower() not in IMAGE_SUFFIXES:
        raise UnsafePath(f"only image files are served ({', '.join(sorted(IMAGE_SUFFIXES))})")
    root = Path(data_dir).resolve()
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root):
        raise UnsafePath("image path resolves outside the data folder")
    if not resolved.is_file():
        raise FileNotFoundError(f"no image {relative!r} in the data folder")
    return resolved


def media_type(path: Path) -> str:
    return IMAGE_SUFFIXES[path.suffix.lower()]
