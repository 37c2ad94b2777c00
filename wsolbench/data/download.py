"""``wsolbench data download``: fetch, verify and unpack the official dataset files.

* urllib only; resumable: bytes go to ``<file>.part`` and an interrupted transfer (or a
  re-run after Ctrl-C) continues with an HTTP ``Range`` request. A server that ignores
  Range simply restarts the file.
* verified: the MD5/SHA-256 in :mod:`wsolbench.data.catalog` must match; where no
  checksum is known the computed digests are printed instead (never invented).
* unpacked safely: tar/zip members with absolute paths, ``..`` or links leading out of
  the root are refused; archives are unpacked into a staging folder inside the root and
  moved into place only when complete, so an interrupted unpack is not mistaken for a
  finished one.
* offline or dead links: a message lists which file to place where by hand; files found
  in the root are verified and unpacked on the next run.

Base URLs can be replaced by a mirror (``mirror=`` / ``--mirror`` / ``WSOLBENCH_MIRROR``),
which must serve every file flat as ``<mirror>/<filename>``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wsolbench.data.catalog import Source, dataset_info
from wsolbench.errors import UserError

MIRROR_ENV = "WSOLBENCH_MIRROR"
USER_AGENT = "wsolbench-data-download (python urllib)"
CHUNK = 1 << 20

Log = Callable[[str], None]


class DownloadError(UserError):
    """A file could not be fetched, verified or unpacked; the message says what to do."""


class ChecksumError(DownloadError):
    pass


class _Restart(Exception):
    """The partial file cannot be continued; start the file again."""


@dataclass
class Outcome:
    filename: str
    status: str  # "present" | "downloaded" | "extracted" | "failed"
    detail: str = ""


# --------------------------------------------------------------------------- URLs


def source_url(source: Source, mirror: str | None = None) -> str | None:
    """The address to fetch ``source`` from: the mirror's (argument, then env var) or the official one."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(source.filename)
    return source.url


# --------------------------------------------------------------------------- fetching


def fetch(url: str, dest: Path, *, timeout: float = 60.0, retries: int = 3,
          log: Log = print) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with HTTP Range; return ``dest``.

    Raises :class:`DownloadError` (one line) when the server answers an error status,
    the host cannot be reached, or the transfer keeps breaking off.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for attempt in range(1, retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                total = _receive(resp, part, offset, url, log)
            size = part.stat().st_size
            if total is not None and size != total:
                last_error = f"transfer ended at {size} of {total} bytes"
                continue
            os.replace(part, dest)
            return dest
        except _Restart as exc:
            part.unlink(missing_ok=True)
            last_error = f"{exc}; restarting"
            continue
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                # Range not satisfiable: the part is complete already, or stale.
                total = _content_range_total(exc.headers.get("Content-Range", ""))
                if total is not None and total == offset:
                    os.replace(part, dest)
                    return dest
                part.unlink()
                last_error = "server refused to resume; restarting"
                continue
            if exc.code >= 500:
                last_error = f"HTTP {exc.code} {exc.reason}"
                time.sleep(min(2.0 * attempt, 5.0))
                continue
            raise DownloadError(f"HTTP {exc.code} {exc.reason} from {url}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError, ConnectionResetError)):
                last_error = f"{type(reason).__name__}: {reason}"
                continue
            raise DownloadError(f"cannot reach {url} ({reason}); offline?") from None
        except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as exc:
            last_error = f"transfer broke off ({type(exc).__name__})"
            log(f"  {last_error}; resuming")
            continue
    raise DownloadError(f"download of {url} failed after {retries} attempts ({last_error}); "
                        f"run the command again to resume from {part.name}")


def _receive(resp, part: Path, offset: int, url: str, log: Log) -> int | None:
    """Write the body of ``resp`` to ``part``; return the expected full size if known."""
    status = getattr(resp, "status", 200)
    length = resp.headers.get("Content-Length")
    if status == 206:
        start, total = _content_range(resp.headers.get("Content-Range", ""))
        if start != offset:
            raise _Restart(f"server resumed at byte {start}, not {offset}")
        mode = "ab"
        log(f"  resuming {url} at byte {offset}")
    else:
        mode, offset = "wb", 0  # server ignored Range (or fresh start): begin again
        total = None
        log(f"  downloading {url}")
    if total is None and length is not None and length.isdigit():
        total = offset + int(length)
    done = offset
    last = time.monotonic()
    with open(part, mode) as fh:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            fh.write(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - last > 10:
                last = now
                pct = f" ({100 * done / total:.0f}%)" if total else ""
                log(f"  {done / 1e6:.1f} MB{pct}")
    return total


def _content_range(text: str) -> tuple[int | None, int | None]:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", text)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _content_range_total(text: str) -> int | None:
    m = re.match(r"\s*bytes\s+\*/(\d+)", text)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- checksums


def digests(path: Path) -> dict[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify(path: Path, source: Source, log: Log = print) -> dict[str, str]:
    """Check ``path`` against the source's checksums; print the digests when none is known."""
    got = digests(path)
    expected = {k: v for k, v in (("md5", source.md5), ("sha256", source.sha256)) if v}
    for kind, want in expected.items():
        if got[kind] != want.lower():
            raise ChecksumError(f"checksum mismatch for {path}: {kind} should be {want}, is "
                                f"{got[kind]}")
    if expected:
        log(f"  verified {path.name} ({', '.join(f'{k} {v}' for k, v in expected.items())})")
    else:
        log(f"  {path.name}: no published checksum known; computed md5 {got['md5']}, "
            f"sha256 {got['sha256']}")
    return got


# --------------------------------------------------------------------------- extraction


def _safe_member_path(root: Path, name: str, archive: Path) -> Path:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"{archive} holds a member with an absolute path ({name!r}); "
                            "refusing to unpack it")
    parts = [p for p in posixpath.normpath(norm).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"{archive} holds a member escaping the target folder ({name!r}); "
                            "refusing to unpack it")
    target = (root / Path(*parts)) if parts else root
    if not _within(target, root):
        raise DownloadError(f"{archive} member {name!r} would land outside {root}; refusing")
    return target


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def extract(archive: Path, dest: Path, log: Log = print) -> list[str]:
    """Unpack a tar (any compression) or zip ``archive`` into ``dest``; return the top-level names.

    Every member is checked before anything is written; the content is unpacked into a
    staging folder inside ``dest`` and moved into place once complete.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".unpacking-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, staging)
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive; delete it and "
                                "download it again")
        tops = sorted(p.name for p in staging.iterdir())
        for name in tops:
            _merge_move(staging / name, dest / name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{archive} cannot be unpacked ({type(exc).__name__}: {exc}); it is "
                            "damaged: delete it and download it again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"  unpacked {archive.name} -> {', '.join(tops) or '(nothing)'} in {dest}")
    return tops


def _extract_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            target = _safe_member_path(staging, m.name, archive)
            if m.issym() or m.islnk():
                link = m.linkname.replace("\\", "/")
                base = target.parent if m.issym() else staging
                if link.startswith("/") or not _within(base / link, staging):
                    raise DownloadError(f"{archive} member {m.name!r} links outside the target "
                                        f"folder ({m.linkname!r}); refusing to unpack it")
            elif not (m.isfile() or m.isdir()):
                raise DownloadError(f"{archive} member {m.name!r} is a device or pipe; refusing")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(staging, members=members, filter="data")
        else:  # pragma: no cover - Python without PEP 706 filters; members checked above
            tf.extractall(staging, members=members)


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _safe_member_path(staging, info.filename, archive)
        bad = zf.testzip()
        if bad is not None:
            raise DownloadError(f"{archive} member {bad!r} is corrupt; delete the archive and "
                                "download it again")
        zf.extractall(staging)


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; folders that exist already are merged (files replaced)."""
    if dst.is_dir() and src.is_dir() and not dst.is_symlink():
        for child in list(src.iterdir()):
            _merge_move(child, dst / child.name)
        src.rmdir()
    else:
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(src, dst)


# --------------------------------------------------------------------------- datasets


def manual_instructions(name: str, root: Path, source: Source, reason: str,
                        url: str | None) -> str:
    checks = ", ".join(f"{k} {v}" for k, v in (("md5", source.md5), ("sha256", source.sha256)) if v)
    where = f" from {url}" if url else ""
    note = f" ({source.note})" if source.note else ""
    unpacked = (f" (or put its unpacked content there, so that {root / source.produces} exists)"
                if source.extract and source.produces else "")
    return (f"{source.filename}: {reason}. Get it by hand{where}{note}, place it at "
            f"{root / source.filename}" + (f" ({checks})" if checks else "") + unpacked
            + f" and run `wsolbench data download {name} --root {root}` again: files found "
              "there are verified and unpacked")


def download(name: str, root: Path | str, *, mirror: str | None = None,
             keep_archives: bool = False, force: bool = False, include_optional: bool = True,
             timeout: float = 60.0, log: Log = print) -> list[Outcome]:
    """Fetch, verify and unpack every source of dataset ``name`` into ``root``.

    Afterwards the dataset's loader accepts ``root``. Sources already in place are
    skipped (``force`` fetches them again). Raises :class:`DownloadError` naming every
    file that could not be obtained and where to place it by hand.
    """
    info = dataset_info(name)
    if not info.sources:
        raise UserError(f"dataset '{name}' has nothing to download ({info.notes})")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    failures: list[str] = []
    for src in info.sources:
        if src.optional and not include_optional:
            continue
        log(f"{src.filename}:")
        try:
            outcomes.append(_obtain(name, root, src, mirror, keep_archives, force, timeout, log))
        except DownloadError as exc:
            url = source_url(src, mirror)
            msg = manual_instructions(name, root, src, str(exc), url)
            log(f"  FAILED: {msg}")
            failures.append(src.filename)
            outcomes.append(Outcome(src.filename, "failed", str(exc)))
    if failures:
        raise DownloadError(f"{len(failures)} of {len(outcomes)} files of {info.display_name} "
                            f"could not be obtained ({', '.join(failures)}); place them by hand "
                            "as listed above and run the command again")
    log(f"{info.display_name} is in place under {root}; check it with "
        f"`wsolbench data check {name} --root {root}`")
    return outcomes


def _obtain(name: str, root: Path, src: Source, mirror: str | None, keep_archives: bool,
            force: bool, timeout: float, log: Log) -> Outcome:
    target = root / src.filename
    done = root / src.produces if src.produces else None
    if not force:
        if src.extract and done is not None and done.exists():
            log(f"  already in place ({src.produces}); skipping")
            return Outcome(src.filename, "present")
        if not src.extract and target.is_file():
            verify(target, src, log)
            return Outcome(src.filename, "present")
    status = "present"
    if force or not target.is_file():
        url = source_url(src, mirror)
        if url is None:
            raise DownloadError("no working public address is known")
        fetch(url, target, timeout=timeout, log=log)
        status = "downloaded"
    try:
        verify(target, src, log)
    except ChecksumError as exc:
        if status == "downloaded":
            target.unlink()
            raise ChecksumError(f"{exc}; the download was deleted") from None
        raise ChecksumError(f"{exc}; delete or replace that file") from None
    if src.extract:
        extract(target, root, log)
        if not keep_archives:
            target.unlink()
        status = "extracted"
    return Outcome(src.filename, status)
