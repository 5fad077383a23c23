"""Model checkpoints on disk: atomic writes, and reloading every model at start.

Layout of the data directory:

    models/<id>.safetensors   the engine's checkpoint (parameters, optimizer state, spec, step)
    models/<id>.owner         who created the model: a SHA-256 of their API key, or empty

A write goes to a temporary file in the same folder, is fsynced, renamed over the old file
and the folder fsynced, so a crash leaves either the old checkpoint or the new one. A file
that cannot be read at start is reported and skipped; its id stays reserved so nothing
overwrites it.
"""

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import ID_RE, Model  # ID_RE: nothing else ever becomes part of a file name

log = logging.getLogger("gradserve")

SUFFIX = ".safetensors"


def atomic_write(path: Path, data: bytes, before_replace: Callable[[], object] | None = None) -> None:
    """Replaces `path` by `data` so that a crash leaves either the old or the new content;
    `before_replace` runs once the new content is on disk, before it replaces the old."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Makes a rename or unlink in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Loaded:
    """A model read back from disk, with its owner."""

    id: str
    model: Model
    owner: str | None


class Checkpoints:
    """The folder of model checkpoints; every method takes an already validated model id."""

    def __init__(self, data_dir: Path):
        self.folder = Path(data_dir) / "models"
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, model_id: str, checkpoint: bytes, before_replace: Callable[[], object] | None = None) -> None:
        atomic_write(self.folder / f"{model_id}{SUFFIX}", checkpoint, before_replace)

    def save_owner(self, model_id: str, owner: str | None) -> None:
        atomic_write(self.folder / f"{model_id}.owner", (owner or "").encode())

    def delete(self, model_id: str) -> None:
        (self.folder / f"{model_id}{SUFFIX}").unlink(missing_ok=True)
        (self.folder / f"{model_id}.owner").unlink(missing_ok=True)
        fsync_dir(self.folder)

    def ids(self) -> dict[str, str | None]:
        """Gives {id: owner} of every checkpoint in the folder, without reading the checkpoints."""
        found = {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            model_id = path.name[: -len(SUFFIX)]
            if ID_RE.fullmatch(model_id):
                found[model_id] = self._owner(model_id)
        return found

    def _owner(self, model_id: str) -> str | None:
        owner_file = self.folder / f"{model_id}.owner"
        return (owner_file.read_text().strip() or None) if owner_file.exists() else None

    def load_all(self, keep: Callable[[str], bool] = lambda model_id: True) -> tuple[list[Loaded], dict[str, str]]:
        """Gives every readable model whose id `keep` takes, and {id: reason} for each
        checkpoint that is not readable."""
        loaded, skipped = [], {}
        for tmp in self.folder.glob(".*.tmp"):
            written = tmp.name[1:].rsplit(".", 2)[0]  # .<id>.safetensors.<hex>.tmp, .<id>.owner.<hex>.tmp
            if keep(written.removesuffix(SUFFIX).removesuffix(".owner")):  # not another host's write
                log.warning("removing %s, a write that never completed", tmp.name)
                tmp.unlink(missing_ok=True)
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            model_id = path.name[: -len(SUFFIX)]
            if not ID_RE.fullmatch(model_id):
                log.warning("skipping %s: not a valid model id", path.name)
                continue
            if not keep(model_id):
                continue
            try:
                model = Model.from_bytes(path.read_bytes())
                owner = self._owner(model_id)
            except Exception as exc:  # a bad file must never stop the server
                reason = f"{type(exc).__name__}: {exc}"
                log.error("skipping checkpoint %s: %s", path, reason)
                skipped[model_id] = reason
                continue
            model.spec["id"] = model_id
            loaded.append(Loaded(model_id, model, owner))
        return loaded, skipped
