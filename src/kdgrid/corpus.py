"""Reading and writing parallel text: plain or .gz, strict UTF-8, one sentence per line.

Every problem is reported with the file and line: invalid UTF-8, a corrupt or truncated .gz,
mismatched line counts, an empty corpus. Writes are atomic.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from kdgrid.errors import KdgridError, atomic_output

SPLITS = ("train", "valid", "test")


BOM = "\ufeff"


def iter_lines(path):
    """Yield lines without their newline. Streams: never holds the file in memory. A UTF-8
    byte-order mark at the start of the file (Windows editors write one) is dropped, so it does
    not become part of the first sentence's first word."""
    path = Path(path)
    if not path.exists():
        raise KdgridError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    try:
        with opener(path, "rb") as raw:
            for n, line in enumerate(raw, start=1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise KdgridError(f"{path}: line {n}: invalid UTF-8 (byte 0x{line[e.start]:02x} at "
                                      f"column {e.start + 1}); re-encode the file as UTF-8") from None
                if n == 1 and text.startswith(BOM):
                    text = text[1:]
                yield text.rstrip("\n").rstrip("\r")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise KdgridError(f"{path}: corrupt or truncated gzip data after line {n} ({e})") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise KdgridError(f"{path}: cannot read ({e.strerror or e})") from None


def read_lines(path) -> list[str]:
    return list(iter_lines(path))


def read_parallel(src_path, tgt_path) -> list[tuple[str, str]]:
    """Both sides, checked line by line: equal counts and at least one pair."""
    pairs = []
    src_it, tgt_it = iter_lines(src_path), iter_lines(tgt_path)
    sentinel = object()
    n = 0
    while True:
        s, t = next(src_it, sentinel), next(tgt_it, sentinel)
        if s is sentinel or t is sentinel:
            if s is not t:
                longer, shorter = (src_path, tgt_path) if t is sentinel else (tgt_path, src_path)
                extra = 1 + sum(1 for _ in (src_it if t is sentinel else tgt_it))
                raise KdgridError(f"{longer}: has {n + extra} lines but {shorter} has {n}: the sides "
                                  f"of a parallel corpus must have equal line counts (first unmatched "
                                  f"line: {n + 1})")
            break
        n += 1
        pairs.append((s, t))
    if not pairs:
        raise KdgridError(f"{src_path}: empty corpus (no lines)")
    return pairs


def write_lines(path, lines) -> int:
    n = 0
    with atomic_output(path) as f:
        for line in lines:
            if "\n" in line:
                raise KdgridError(f"{path}: line {n + 1} to write contains a newline")
            f.write(line + "\n")
            n += 1
    return n
