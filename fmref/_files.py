"""Files fmref writes and reads: atomic writes, recognisable temporaries, bounded reads.

**Writing.** A file (or a folder) is built under a temporary name beside its target and moved
into place with one rename, so a reader never sees half of it. Temporary names have the form
``.<target name>.fmref-tmp.<host>.<pid>.<random>``. A writer killed mid-write leaves one
behind; the next write of the same target removes every such temporary of that target that
was made on this host by a process that no longer exists. Nothing else is ever removed:
not a file of another name, not a temporary of a live process (a concurrent writer), not one
made on another host (a shared file system), and on platforms without a safe process check
(Windows) none at all.

**Reading.** :func:`open_regular` refuses anything but a regular file before opening it (a
directory, a FIFO, a device such as ``/dev/zero``, each named as what it is), opens without
blocking (a file swapped for a FIFO in between cannot hang the reader) and checks the type
and the size again on the open descriptor. :func:`read_npz` parses an ``.npz`` without
unpickling and without trusting any declared size: members must be stored uncompressed (what
fmref writes; so no deflate bomb), their declared sizes must fit in the bytes the file really
has, and each ``.npy`` header's shape × itemsize must equal its member's size, all checked
before an array is allocated.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import socket
import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

TMP_TAG = "fmref-tmp"
#: The largest ``.npy`` header fmref accepts (NumPy's own default limit).
_MAX_HEADER = 10_000
_CHUNK = 1 << 20


def _host() -> str:
    # Dots separate the fields of a temporary name, so the host name must not contain any.
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temp_path(target: Path) -> Path:
    """Return a fresh temporary name beside ``target`` (see the module docstring)."""
    tag = f"{TMP_TAG}.{_host()}.{os.getpid()}.{secrets.token_hex(6)}"
    return target.parent / f".{target.name}.{tag}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def stale_temporaries(target: Path) -> list[Path]:
    """Return the temporaries of ``target`` left by dead fmref writers on this host."""
    if os.name != "posix":  # os.kill(pid, 0) is not a harmless probe on Windows
        return []
    prefix = f".{target.name}.{TMP_TAG}.{_host()}."
    out = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid, _, token = entry.name[len(prefix) :].partition(".")
        if pid.isdigit() and re.fullmatch(r"[0-9a-f]{12}", token) and not _alive(int(pid)):
            out.append(Path(entry.path))
    return out


def remove_stale_temporaries(target: Path) -> None:
    """Remove what :func:`stale_temporaries` finds (plain files and real folders only)."""
    for p in stale_temporaries(target):
        try:
            mode = os.lstat(p).st_mode
            if stat.S_ISREG(mode):
                p.unlink()
            elif stat.S_ISDIR(mode):
                shutil.rmtree(p)
        except OSError:  # another writer cleaned it first, or it is not ours to remove
            pass


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place.

    Readers never see a half-written file. The file gets the usual umask-based permissions.
    Stale temporaries of ``path`` left by killed writers are removed first (module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temp_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # O_EXCL: never write through a planted file or link
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _kind(mode: int) -> str | None:
    """Describe a non-regular file type; None for a regular file."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _refuse(path: Path, what: str, kind: str) -> ValueError:
    via = ""
    if path.is_symlink():
        via = f" (a symbolic link to {os.path.realpath(path)})"
    return ValueError(f"{what} {str(path)!r} is {kind}{via}, not a regular file")


def open_regular(path: Path, what: str, max_bytes: int | None = None) -> tuple[BinaryIO, int]:
    """Open a regular file for reading; return it and its size.

    Raises FileNotFoundError when nothing is there (or a symbolic link points nowhere), and
    ValueError for a directory, FIFO, device or socket, or a file over ``max_bytes``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise FileNotFoundError(
                f"{what} {str(path)!r} is a broken symbolic link (to {os.readlink(path)!r})"
            ) from None
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except PermissionError:
        raise
    except OSError as exc:  # a symbolic-link loop, a file used as a folder, a name too long
        raise ValueError(f"{what} {str(path)!r} cannot be opened: {exc.strerror}") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise _refuse(path, what, kind)
    _check_size(path, what, st.st_size, max_bytes)
    # O_NONBLOCK: if the path became a FIFO since the stat, open returns instead of waiting.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        kind = _kind(st.st_mode)
        if kind is not None:
            raise _refuse(path, what, kind)
        _check_size(path, what, st.st_size, max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _check_size(path: Path, what: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ValueError(
            f"{what} {str(path)!r} has {size} bytes, more than the limit of {max_bytes}; "
            "refusing to read it"
        )


def read_bytes(path: Path, what: str, max_bytes: int) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` (checked before and while reading)."""
    f, size = open_regular(path, what, max_bytes)
    with f:
        data = f.read(size + 1)  # read(n) reserves n bytes: ask for what is there
    if len(data) != size:
        raise ValueError(f"{what} {str(path)!r} changed size while being read")
    return data


def read_npz(
    source: BinaryIO | bytes,
    what: str,
    *,
    size: int | None = None,
    dtypes: Iterable[str] = ("float64",),
) -> dict[str, np.ndarray]:
    """Parse an uncompressed ``.npz`` into arrays, refusing anything unexpected first.

    ``size`` is the number of bytes really available (the file's size; ``len(source)`` for
    bytes): the members' declared sizes must fit in it. ``dtypes`` are the accepted dtype
    names; ``"str"`` accepts unicode strings. Every refusal is a ValueError starting ``what``.
    """
    if isinstance(source, bytes):
        size = len(source)
        source = io.BytesIO(source)
    if size is None:
        raise TypeError("size is required when reading from a file object")
    allowed = set(dtypes)

    def bad(msg: str) -> ValueError:
        return ValueError(f"{what}: {msg}")

    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise bad(f"not a readable .npz ({type(exc).__name__}: {exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise bad("the zip directory names a member twice")
        declared = 0
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise bad(f"member {info.filename!r} is not an .npy array")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise bad(
                    f"member {info.filename!r} is compressed or encrypted; fmref writes and "
                    "reads uncompressed .npz only"
                )
            if info.file_size != info.compress_size:
                raise bad(f"member {info.filename!r} declares inconsistent sizes")
            declared += info.file_size
        if declared > size:
            raise bad(f"members declare {declared} bytes but the file has only {size}")
        out = {}
        for info in infos:
            out[info.filename[:-4]] = _read_member(zf, info, allowed, bad)
    return out


def _read_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    allowed: set[str],
    bad: Callable[[str], ValueError],
) -> np.ndarray:
    name = info.filename[:-4]
    fmt = np.lib.format
    try:
        with zf.open(info) as m:
            version = fmt.read_magic(m)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(m, max_header_size=_MAX_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(m, max_header_size=_MAX_HEADER)
            else:
                raise bad(f"array {name!r} has .npy format version {version}")
            kind = "str" if dtype.kind == "U" else dtype.name
            if dtype.hasobject or kind not in allowed:
                want = ", ".join(sorted(allowed))
                raise bad(f"array {name!r} has dtype {dtype}; expected {want} (no pickles)")
            if any(s < 0 for s in shape):
                raise bad(f"array {name!r} has a negative dimension in its shape {shape}")
            count = 1
            for s in shape:
                count *= s
            nbytes = count * dtype.itemsize
            header = m.tell()
            if nbytes != info.file_size - header:
                raise bad(
                    f"array {name!r}: its header claims shape {shape} ({nbytes} bytes) but the "
                    f"member holds {info.file_size - header} bytes"
                )
            arr = np.empty(count, dtype=dtype)  # nbytes is now known to be in the file
            buf = arr.view(np.uint8)
            done = 0
            while done < nbytes:
                chunk = m.read(min(_CHUNK, nbytes - done))
                if not chunk:
                    raise bad(f"array {name!r} is truncated")
                buf[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                done += len(chunk)
            if m.read(1):  # also makes zipfile compare the CRC
                raise bad(f"array {name!r} has trailing bytes")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise bad(f"array {name!r} is unreadable ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(bad(""))):
            raise
        raise bad(f"array {name!r} has a malformed .npy header ({exc})") from None
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr.reshape(shape, order="F" if fortran else "C")


def is_empty_dir(path: Path) -> bool:
    """Return True for a real (not symlinked) folder with nothing in it."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and not os.listdir(path)
    except OSError:
        return False


def write_dir(
    out: Path,
    files: dict[str, bytes],
    *,
    overwrite: bool,
    ours: Callable[[Path], bool],
    what: str,
    kind: str,
) -> None:
    """Create folder ``out`` holding ``files`` (relative path → bytes) in one rename.

    The folder is built under a temporary name beside ``out``. Then ``out`` is claimed with
    ``mkdir`` (atomic: it fails if anything is there) and the built folder renamed over that
    empty claim (the rename fails if anyone put something into it). So without ``overwrite``
    one of several concurrent writers succeeds and the others get a ValueError; a folder someone
    else creates at ``out`` is never replaced. With ``overwrite`` an existing ``out`` is moved
    aside and removed only if it is empty or ``ours(out)`` holds (checked before and after the
    move); concurrent overwriting writers retry, and the last one wins.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = temp_path(out)
    os.mkdir(tmp)
    try:
        for rel, blob in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        _install(tmp, out, overwrite, ours, what, kind)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp)


def _install(
    tmp: Path, out: Path, overwrite: bool, ours: Callable[[Path], bool], what: str, kind: str
) -> None:
    exists = f"{what}: {out} already exists (pass overwrite=True / --force)"
    foreign = f"{what}: {out} exists and is not {kind}; refusing to replace it"
    replaceable = lambda p: is_empty_dir(p) or ours(p)  # noqa: E731
    for _ in range(16):
        aside = None
        try:
            os.mkdir(out)  # the claim
        except FileExistsError:
            if not overwrite:
                raise ValueError(exists) from None
            if not replaceable(out):
                # a concurrent overwriting writer may have moved it aside while it was read:
                # only a folder that is still there, and still not ours, is foreign
                if not os.path.lexists(out) or replaceable(out):
                    continue
                raise ValueError(foreign) from None
            aside = temp_path(out)
            try:
                os.rename(out, aside)
            except FileNotFoundError:  # removed meanwhile: claim it again
                continue
            if not replaceable(aside):  # swapped between the check and the move: put it back
                try:
                    os.rename(aside, out)
                except OSError:
                    raise ValueError(
                        f"{foreign}; it was replaced while fmref checked it and is now at {aside}"
                    ) from None
                raise ValueError(foreign) from None
            try:
                os.mkdir(out)
            except FileExistsError:  # another writer got there first: try again
                shutil.rmtree(aside)
                continue
        try:
            os.rename(tmp, out)  # replaces only our own claim, and only while it is empty
        except OSError:
            if not overwrite:
                raise ValueError(
                    f"{what}: {out} was created or filled by someone else while fmref wrote it; "
                    "left as it is"
                ) from None
            continue  # a concurrent overwriting writer filled the claim: replace its result
        finally:
            if aside is not None and os.path.lexists(aside):
                shutil.rmtree(aside)
        return
    raise ValueError(f"{what}: {out} kept changing while fmref wrote it; giving up")
