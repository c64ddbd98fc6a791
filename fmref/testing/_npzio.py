"""Deterministic ``.npz`` writing and hash-checked, pickle-free reading.

``np.savez`` stamps each zip member with the current time, so two writes differ. Here every
member gets the fixed date 1980-01-01 (the zip epoch), a fixed mode, sorted names and no
compression; ``np.lib.format.write_array`` then gives byte-identical files for equal arrays.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .._files import read_bytes
from .._files import read_npz as parse_npz

#: Largest case file read; fmref's default suite has files of about 10 KiB.
MAX_CASE_BYTES = 1 << 28

_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise arrays to the bytes of an uncompressed ``.npz`` with fixed metadata."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype == object:
                raise TypeError(f"array {name!r} has dtype object; only numeric arrays are written")
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # fixed 'unix' so the bytes do not depend on the platform
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def sha256(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_npz(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Read ``path`` after checking its sha256; never unpickles, never reads past a limit.

    Only a regular file of at most :data:`MAX_CASE_BYTES` is read (a directory, FIFO or device
    is refused before it is opened); the arrays must be uncompressed float64.
    """
    try:
        data = read_bytes(path, "suite file", MAX_CASE_BYTES)
    except FileNotFoundError:
        if os.path.lexists(path):  # a broken symbolic link: say so
            raise
        raise FileNotFoundError(f"suite file {path} listed in the manifest is missing") from None
    got = sha256(data)
    if got != expected_sha256:
        raise ValueError(
            f"{path}: sha256 {got} does not match the manifest ({expected_sha256}); the file was "
            "modified or corrupted, refusing to load it"
        )
    # Hash and parse the same bytes, so the file cannot change in between.
    return parse_npz(data, str(path), dtypes=("float64",))
