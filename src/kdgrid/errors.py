"""User-facing errors and all-or-nothing file writes.

A KdgridError is a problem with the user's input (a file, a line, a config key) and is printed by
the CLI as one message without a traceback. Every output goes through `atomic_output`, so a
crash or a bad input never leaves a half-written file that looks complete; and a verb with several
outputs writes them inside `all_or_nothing`, so a failure after its first output leaves none.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
from pathlib import Path

# The open `all_or_nothing` group, if any: ({key: declared path}, {key: finished temporary}).
_GROUP: contextvars.ContextVar = contextvars.ContextVar("kdgrid_output_group", default=None)


def _key(path) -> str:
    return os.path.abspath(os.fspath(path))


class KdgridError(Exception):
    """An error the user can fix; the message says what and where."""


@contextlib.contextmanager
def all_or_nothing(*paths):
    """The outputs of one verb appear together or not at all.

    Inside the block, `atomic_output` to one of `paths` (None: an optional output not asked for)
    leaves its finished temporary (`.NAME.*.tmp` beside NAME) in place instead of renaming it.
    When the whole block succeeds, every temporary is renamed onto its path; when it fails (a bad
    input found late, a crash, Ctrl-C), every temporary is removed, so no declared output exists.
    Only the declared paths wait: other files the block writes (a download cache, resumable
    chunks) are written at once. A kill -9 can still leave hidden `.NAME.*.tmp` files, never NAME.
    """
    declared = {_key(p): Path(p) for p in paths if p is not None}
    pending: dict[str, Path] = {}
    token = _GROUP.set((declared, pending))
    try:
        yield
    except BaseException:
        for tmp in pending.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _GROUP.reset(token)
    done = []
    try:
        for key, tmp in pending.items():
            os.replace(tmp, declared[key])
            done.append(declared[key])
    except BaseException:  # a rename failed: take back the ones already made
        for path in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for tmp in pending.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w"):
    """Yield a temporary file beside `path`; rename it onto `path` only if the block succeeds
    (inside `all_or_nothing` declaring `path`: when the whole group succeeds)."""
    group = _GROUP.get()
    deferred = group is not None and _key(path) in group[0]
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
        if deferred:  # written again within the group: the newer one wins
            old = group[1].pop(_key(path), None)
            if old is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            group[1][_key(path)] = Path(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    with atomic_output(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def json_option(value: str, option: str) -> dict:
    """A command-line option holding a JSON object (the workflow's --params blobs)."""
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise KdgridError(f"{option}: not valid JSON ({e.msg} at column {e.pos + 1})") from None
    if not isinstance(obj, dict):
        raise KdgridError(f"{option}: expected a JSON object")
    return obj


def read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise KdgridError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise KdgridError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
