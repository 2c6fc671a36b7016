"""The shared store (config `share.store`): teachers, distilled sets and alignments that one grid
made, kept under a key of their recipe so that any other grid (another config, another results
folder) with the same recipe takes them instead of making them again.

An entry is `<store>/<kind>/<key>/`: the product's files and `entry.json` (the recipe, the code
fingerprint, each file's sha256, the jobs that made it with their cost, and where it came from),
written last so that an entry without it is unfinished and never read. The key is the sha256 of
the recipe (canonical JSON: every setting that decides the product, the training data named by
content, not by path) with the code fingerprint; the workflow builds the recipes
(workflow/rules/share.smk) and decides at planning which products to fetch, so that a fetched one
is a local job of Snakemake itself: on a cluster nothing is submitted for it.

Torch-free: the workflow imports it when it plans jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from kdgrid.errors import KdgridError
from kdgrid.importers import sha256_of

ENTRY = "entry.json"
CODE_LINE = "kdgrid code:"  # what the verbs that make products write to their logs (kdgrid.cli)
MAKER_VERBS = ("train", "distill", "gather", "align")
KINDS = ("teacher", "distilled", "alignment")  # a trained AT; a gathered set; eflomal links of a pair
CODE_MODES = ("source", "version")
_PACKAGE = Path(__file__).resolve().parent


def code_fingerprint(mode: str = "source") -> str:
    """What of kdgrid's code a key holds. `source`: the sha256 of every Python file of the package
    (its path and bytes), so a product is reused only by the very code that made it; `version`:
    kdgrid's version string, so products are reused across the commits of one release (a change
    of training or decoding code between them goes unseen: the user's choice)."""
    if mode == "version":
        from kdgrid import __version__

        return f"version:{__version__}"
    if mode != "source":
        raise KdgridError(f"share.code: {mode!r} is not one of {', '.join(CODE_MODES)}")
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"source:{h.hexdigest()}"


def code_line() -> str:
    """The log line of a job that makes a product: both fingerprints, so that store_put can check
    that the product was made by the code its key names (whichever share.code is)."""
    return f"{CODE_LINE} {code_fingerprint('source')} {code_fingerprint('version')}"


def made_by_code(log_paths: list, code: str) -> str | None:
    """None if every log names `code` on its last code line; else why not (a log missing, or made
    by other code, or before kdgrid wrote the line)."""
    for path in log_paths:
        try:
            lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.startswith(CODE_LINE)]
        except OSError:
            return f"{path}: no log of the job that made it"
        if not lines:
            return f"{path}: made before kdgrid recorded its code in the log"
        if code not in lines[-1].split()[2:]:
            return f"{path}: made by other code ({lines[-1][len(CODE_LINE):].strip()}), not {code}"
    return None


def key(kind: str, recipe: dict, code: str) -> str:
    """The entry's key: sha256 of the kind, the recipe and the code fingerprint."""
    text = json.dumps({"kind": kind, "recipe": recipe, "code": code}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_dir(store, kind: str, key_: str) -> Path:
    if kind not in KINDS:
        raise KdgridError(f"store kind {kind!r}: expected one of {', '.join(KINDS)}")
    return Path(store) / kind / key_


def has(store, kind: str, key_: str) -> bool:
    """Whether the store holds a finished entry (its entry.json written)."""
    return (entry_dir(store, kind, key_) / ENTRY).is_file()


def read_entry(store, kind: str, key_: str) -> dict:
    path = entry_dir(store, kind, key_) / ENTRY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KdgridError(f"{path}: cannot read the store entry ({e})") from None


file_sha256 = sha256_of  # (one home: the importers', which pin every file they take by it)


def corpus_file_sha256(path, memo_dir=None) -> str:
    """sha256 of a local corpus file, remembered per (absolute path, inode, size, mtime, ctime) in `memo_dir`
    (the store's `.hashes/`), so planning a grid does not read a multi-GB corpus every time."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise KdgridError(f"{path}: cannot read the corpus file to key the shared store ({e.strerror})") from None
    memo = None
    if memo_dir is not None:
        tag = hashlib.sha256(f"{p}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}".encode()).hexdigest()
        memo = Path(memo_dir) / tag
        try:
            return memo.read_text().strip()
        except OSError:
            pass
    digest = file_sha256(p)
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(memo, digest + "\n")
        except OSError:
            pass  # a read-only store still keys correctly, only more slowly
    return digest


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _copy(src: Path, dst: Path) -> None:
    """A copy, never a link: Snakemake touches a job's outputs, and a file linked into several
    grids would make each look newer than its own downstream outputs (and rerun them)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)


def put(store, kind: str, key_: str, files: dict, recipe: dict, code: str, jobs: list[dict], origin: dict,
        checks: dict | None = None) -> dict:
    """Store `files` ({name: path}) under the key; returns the entry. `checks`: {name: sha256} of
    the files it was made from (a set's training sources), which a grid taking it must have. An
    entry another grid finished first is kept as it is (same recipe, same code: the same product)."""
    final = entry_dir(store, kind, key_)
    if has(store, kind, key_):
        return {**read_entry(store, kind, key_), "kept": "an entry of this key was already there"}
    if final.exists():
        raise KdgridError(f"{final}: an entry without {ENTRY} (not made by kdgrid's put, which renames a finished "
                          "folder into place); remove it and rerun")
    for name, path in files.items():
        if "/" in name or not Path(path).is_file():
            raise KdgridError(f"store put: {name}={path}: expected a plain name and an existing file")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key_}."))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a store shared by a group: readable as the umask allows, not 0700
    try:
        entry = {"kind": kind, "key": key_, "recipe": recipe, "code": code,
                 "files": {name: file_sha256(path) for name, path in files.items()},
                 "checks": checks or {}, "jobs": jobs, "origin": {**origin, "host": socket.gethostname(),
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
        for name, path in files.items():
            shutil.copy2(path, tmp / name)
        _write_atomic(tmp / ENTRY, json.dumps(entry, indent=1, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o444 & ~umask)  # read-only: nothing writes an entry after it is made
        try:
            os.rename(tmp, final)  # atomic; fails if another grid's entry appeared meanwhile
        except OSError:
            if not has(store, kind, key_):
                raise
            return {**read_entry(store, kind, key_), "kept": "an entry of this key appeared meanwhile"}
        return entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fetch(store, kind: str, key_: str, outputs: dict) -> dict:
    """Write the entry's files to `outputs` ({name: path}), each checked against its sha256;
    returns the entry."""
    if not has(store, kind, key_):
        raise KdgridError(f"{entry_dir(store, kind, key_)}: no finished entry in the store (planned from it, "
                          "then removed?); rerun the workflow to make the product here")
    entry = read_entry(store, kind, key_)
    missing = sorted(set(outputs) - set(entry["files"]))
    if missing:
        raise KdgridError(f"{entry_dir(store, kind, key_)}: the entry has no file(s) {', '.join(missing)} "
                          f"(it holds {', '.join(sorted(entry['files']))})")
    for name, out in outputs.items():
        src = entry_dir(store, kind, key_) / name
        out = Path(out)
        _copy(src, out)
        if file_sha256(out) != entry["files"][name]:
            out.unlink()
            raise KdgridError(f"{src}: its sha256 differs from the one recorded when it was stored; the store "
                              "entry is damaged: remove the folder and rerun")
    return entry
