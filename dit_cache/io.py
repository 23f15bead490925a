"""Small file-system helpers shared by the CLI commands (dit-cache, eval, search): argparse number types,
output locations checked before any work, and an exclusive lock on a run folder."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

__all__ = ["OutLock", "check_out_dir", "check_out_file", "nonnegative_int", "positive_int"]


def _int_at_least(low: int):
    """argparse `type=` for integers >= `low` (argparse names the flag in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


positive_int = _int_at_least(1)  # an integer >= 1
nonnegative_int = _int_at_least(0)  # an integer >= 0


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the output folder `path` (parents included) and check that a file can be written in it, before
    any work is done; ValueError naming `flag` otherwise."""
    path = Path(path)
    for parent in (path, *path.parents):  # the first existing component must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """Check that the output file `path` can be written (its folder is created), before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file path")
    check_out_dir(path.parent if str(path.parent) else Path("."), flag=f"{flag} {path}: folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: the file is not writable")
    return path


class OutLock:
    """An exclusive lock on a run folder (`.lock`, flock): a second run into the same --out fails at once."""

    def __init__(self, out: str | Path) -> None:
        import fcntl

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / ".lock"
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            owner = self.fh.read().strip() or "?"
            self.fh.close()
            raise ValueError(f"another run is writing into {out} (pid {owner}): wait for it to finish or choose "
                             "another --out") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file is free)."""
        if not self.fh.closed:
            self.fh.close()

    def __enter__(self) -> OutLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
