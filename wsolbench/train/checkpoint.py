"""Atomic checkpoint files: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsolbench.errors import UserError


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save ``obj`` so that ``path`` is either the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with defer_sigint():  # Ctrl-C inside torch.save breaks its zip writer (even aborts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException as exc:  # never leave a half temporary file behind
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise disk_error(path, exc) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with defer_sigint():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, path)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise disk_error(path, exc) from exc
        raise


@contextmanager
def defer_sigint():
    """Hold Ctrl-C (SIGINT) until the block is done, then deliver it: a file being written
    is either finished or not started, never torn by a KeyboardInterrupt half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # signals unavailable here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


#: errno values that mean "this place cannot be written" (not a bug in wsolbench).
DISK_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EACCES,
                                    errno.EPERM, errno.EROFS, errno.ENOTDIR) if e is not None)


def disk_error(path: Path, exc: OSError, *, where: str = "choose another --out") -> UserError:
    """A one-line error for a failed write of ``path``, saying what to do (``where``)."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why, todo = "the disk is full", f"free space or {where}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why, todo = "the location is not writable", f"fix its permissions or {where}"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why, todo = "a parent of it is a file, not a folder", where
    else:
        why, todo = exc.strerror or str(exc), where
    return UserError(f"cannot write {path}: {why}; {todo} "
                     "(files already written are intact; a started run continues with --resume)")


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
