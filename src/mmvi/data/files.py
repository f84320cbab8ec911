"""Reading data files with clear errors: missing, truncated/corrupt, wrong checksum."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

from mmvi.errors import DataError


def default_data_dir() -> Path:
    """``$MMVI_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("MMVI_DATA_DIR", "data"))


def require_file(path: Path, how_to_get: str, sha256: str | None = None) -> Path:
    """Return ``path`` or raise a one-paragraph :class:`DataError` saying how to get it."""
    path = Path(path)
    if not path.is_file():
        expect = f" (expected sha256 of its content: {sha256})" if sha256 else ""
        raise DataError(f"data file not found: {path}{expect}. {how_to_get}")
    return path


def read_gzip(path: Path, how_to_get: str, sha256: str | None = None) -> bytes:
    """Decompress a .gz file fully; verify the sha256 of the decompressed bytes if given."""
    require_file(path, how_to_get, sha256)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"corrupt or truncated gzip file: {path} ({exc}). Replace it with a good copy. {how_to_get}"
        ) from None
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise DataError(
                f"checksum mismatch for {path}: sha256 of its content is {got}, expected {sha256}. "
                f"The file is corrupt or not the expected one. {how_to_get}"
            )
    return raw


def read_bytes_maybe_gzip(path: Path, how_to_get: str, sha256: str | None = None) -> bytes:
    """The content of ``path``, decompressed when it is gzip (told by its magic bytes, not its name).

    ``sha256`` (optional) is checked against the decompressed content, as :func:`read_gzip`.
    """
    require_file(path, how_to_get, sha256)
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return read_gzip(path, how_to_get, sha256)
    raw = Path(path).read_bytes()
    if sha256 is not None and (got := hashlib.sha256(raw).hexdigest()) != sha256:
        raise DataError(
            f"checksum mismatch for {path}: sha256 of its content is {got}, expected {sha256}. "
            f"The file is corrupt or not the expected one. {how_to_get}"
        )
    return raw


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
