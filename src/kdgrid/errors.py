"""User-facing errors and all-or-nothing file writes.

A KdgridError is a problem with the user's input (a file, a line, a config key) and is printed by
the CLI as one message without a traceback. Every output goes through `atomic_output`, so a
crash or a bad input never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


class KdgridError(Exception):
    """An error the user can fix; the message says what and where."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w"):
    """Yield a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if mode == "path":
            yield Path(tmp)
        else:
            with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    with atomic_output(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise KdgridError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise KdgridError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
