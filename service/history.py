"""A model's training history: one record per applied step, in SQLite in the data directory.

    history/<id>.sqlite   the model's records (WAL journal), one file per model

Only the process that holds a model writes its file (the embedded server, or the model's Ray
host), so no file is ever written by two processes at once. Records are buffered and written
in one transaction with the checkpoint: a step saved under durability "step" has its record
on disk before its answer. A crash may leave records beyond the checkpoint (written by a
buffer that filled up, or by a checkpoint write that did not complete); opening the file
deletes them, so the history never holds a step the model has not taken.

A record's numbers are stored as one float64 blob, in the order of the table `columns` (flat
names, as the CSV header has them: `lr`, `parameters.0.weight.grad_norm`,
`activations.1.dead_fraction`); a column that appears later (an activation measured only
from some step on) is appended, and older records read as NaN there. NaN is "none": a step
with no loss (only grad_outputs), a parameter with no gradient.
"""

import csv
import io
import math
import sqlite3
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

# Records buffered before they are written even if no checkpoint is (durability none/interval).
BUFFERED = 256
CHUNK = 65_536  # records read at a time
TOP = ("time", "lr", "loss", "grad_norm", "update_norm")  # a record's own numbers, after `step`
GROUPS = ("parameters", "activations")  # nested: {name: {statistic: value}}

SCHEMA = """
CREATE TABLE IF NOT EXISTS columns (position INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, record BLOB NOT NULL, flags TEXT NOT NULL);
"""


def _names(record: dict) -> list[str]:
    """Gives a step record's (core's Model.step_record) flat column names, as the CSV header
    has them: TOP, then `<group>.<name>.<statistic>`; _values gives the values in this order."""
    names = list(TOP)
    for group in GROUPS:
        for name, stats in record[group].items():
            names += (f"{group}.{name}.{statistic}" for statistic in stats)
    return names


def _values(record: dict, now: float) -> list[float | None]:
    """Gives a record's values in the order of _names, `now` as its time."""
    values = [now, *(record[name] for name in TOP[1:])]
    for group in GROUPS:
        for stats in record[group].values():
            values += stats.values()
    return values


def _layout(record: dict) -> tuple:
    """Gives what decides a record's flat column names: its parameters' and activations' names
    and statistics, in order (the same from step to step of one model, nearly always)."""
    return tuple((name, tuple(stats)) for group in GROUPS for name, stats in record[group].items())


class History:
    """The records of one model, in its own SQLite file. Its owner calls it one request at a
    time (under the model's lock); reads go through a Snapshot, outside the lock."""

    def __init__(self, path: Path, steps_kept: int):
        """Opens (or creates) the file at `path`, deleting any record beyond step `steps_kept`:
        the model's checkpoint holds that many steps. Raises sqlite3.DatabaseError for a file
        that is not a history."""
        self.path = path
        self._db = _connect(path)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed record survives a power loss
            self._db.executescript(SCHEMA)
            with self._db:
                self._db.execute("DELETE FROM steps WHERE step > ?", (steps_kept,))
            self.columns = [name for (name,) in self._db.execute("SELECT name FROM columns ORDER BY position")]
            last = self._db.execute("SELECT record, flags FROM steps ORDER BY step DESC LIMIT 1").fetchone()
        except BaseException:
            self._db.close()
            raise
        self._position = {name: i for i, name in enumerate(self.columns)}
        self._new_columns: list[str] = []
        self._layouts: dict[tuple, tuple[list[int], bool]] = {}  # _layout -> (column positions, in order)
        self._buffer: list[tuple[int, bytes, str]] = []
        self.last: dict = {"loss": None, "flags": []}
        if last is not None:
            self.last = {"loss": _none(float(np.frombuffer(last[0])[self._position["loss"]])),
                         "flags": last[1].split()}

    def append(self, record: dict) -> None:
        """Buffers the record of a step just taken; writes the buffer once it holds BUFFERED."""
        now, layout = time.time(), _layout(record)
        known = self._layouts.get(layout)
        if known is None:  # a record of new names: its columns found (or added) once
            names = _names(record)
            for name in names:
                if name not in self._position:
                    self._position[name] = len(self.columns)
                    self.columns.append(name)
                    self._new_columns.append(name)
            positions = [self._position[name] for name in names]
            known = self._layouts[layout] = positions, positions == list(range(len(positions)))
        positions, in_order = known
        values = [math.nan if value is None else value for value in _values(record, now)]
        if in_order and len(positions) == len(self.columns):  # every column, in order: the common case
            blob = array("d", values).tobytes()
        else:
            row = np.full(len(self.columns), np.nan)
            row[positions] = values
            blob = row.tobytes()
        self._buffer.append((record["step"], blob, " ".join(record["flags"])))
        self.last = {"loss": _none(record["loss"]), "flags": record["flags"]}
        if len(self._buffer) >= BUFFERED:
            self.flush()

    @property
    def buffered(self) -> int:
        """Gives the records not yet written."""
        return len(self._buffer)

    def flush(self) -> None:
        """Writes the buffered records in one transaction (synced to disk before it returns);
        if the write fails they stay buffered."""
        if not self._buffer:
            return
        buffer, new_columns = self._buffer, self._new_columns
        self._buffer, self._new_columns = [], []
        try:
            with self._db:  # one transaction
                self._db.executemany("INSERT INTO columns VALUES (?, ?)",
                                     ((self._position[name], name) for name in new_columns))
                self._db.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", buffer)
        except BaseException:
            self._buffer, self._new_columns = buffer + self._buffer, new_columns + self._new_columns
            raise

    def snapshot(self) -> "Snapshot":
        """Writes what is buffered and gives what a reader needs to read every record so far."""
        self.flush()
        return Snapshot(self.path, tuple(self.columns))

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Snapshot:
    """A model's history file and its columns as of a moment, read on a connection of its
    own (WAL: beside the writer, which may go on appending)."""

    path: Path
    columns: tuple[str, ...]

    def read(self, since: int | None = None, limit: int | None = None, points: int | None = None) -> dict:
        """Gives the records with step > `since` (all if None), the first `limit` of them,
        downsampled to at most `points`: {"step": ints, "flags": [[str]], "columns": {flat
        name: float64 array}, "total": records after `since`, "downsampled": bool}."""
        after = -1 if since is None else since
        db = _connect(self.path)
        try:
            total = db.execute("SELECT count(*) FROM steps WHERE step > ?", (after,)).fetchone()[0]
            n = total if limit is None else min(total, limit)
            steps = np.empty(n, np.int64)
            values = np.full((len(self.columns), n), np.nan)  # one row per column: each a contiguous array
            flagged: dict[int, str] = {}  # record index -> its flags, for the few that have any
            cursor = db.execute("SELECT step, record, flags FROM steps WHERE step > ? ORDER BY step LIMIT ?",
                                (after, n))
            done = 0
            while done < n and (rows := cursor.fetchmany(CHUNK)):
                rows = rows[:n - done]  # records appended since the count are not this read's
                chunk_steps, blobs, texts = zip(*rows)
                steps[done:done + len(rows)] = chunk_steps
                _fill(values[:, done:done + len(rows)], blobs)
                flagged.update((done + i, text) for i, text in enumerate(texts) if text)
                done += len(rows)
        finally:
            db.close()
        steps, values = steps[:done], values[:, :done]
        downsampled = points is not None and done > points
        if downsampled:
            steps, values, flags = downsample(steps, values, flagged, points)
        else:
            flags = [flagged[i].split() if i in flagged else [] for i in range(done)]
        return {"step": steps, "flags": flags, "columns": dict(zip(self.columns, values)), "total": total,
                "downsampled": downsampled}


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the worker threads take turns (History under its model's lock).
    return sqlite3.connect(path, check_same_thread=False, timeout=10)


def _none(loss: float | None) -> float | None:
    """Gives a loss as a record keeps it: NaN is none (no loss)."""
    return None if loss is None or math.isnan(loss) else loss


def remove(path: Path) -> None:
    """Deletes a history file with its WAL journal."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fill(out: np.ndarray, blobs: tuple[bytes, ...]) -> None:
    """Writes records' float64 blobs into the columns of `out` (columns, records); a record
    that predates a column leaves it NaN."""
    width = out.shape[0]
    if len(blobs[0]) == len(blobs[-1]) == 8 * width:  # columns only grow: every record has them all
        out[:] = np.frombuffer(b"".join(blobs)).reshape(len(blobs), width).T
        return
    for i, blob in enumerate(blobs):
        record = np.frombuffer(blob)
        out[:len(record), i] = record


def downsample(steps: np.ndarray, columns: np.ndarray, flagged: dict[int, str], points: int):
    """Gives at most `points` records of (steps, columns (C, N), flags by record index):
    consecutive records in points // 2 buckets, each giving two records, at its first and its
    last step, where every column holds its bucket's minimum and maximum in the order they came
    (NaN ignored), and both hold the flags of the whole bucket."""
    n = len(steps)
    buckets = max(1, points // 2)
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    sizes = np.diff(np.append(starts, n))
    index = np.arange(n)
    out = np.empty((len(columns), 2 * buckets))
    for k, column in enumerate(columns):  # column by column: temporaries of N, not C x N
        low, high = np.fmin.reduceat(column, starts), np.fmax.reduceat(column, starts)
        first_low = np.minimum.reduceat(np.where(column == np.repeat(low, sizes), index, n), starts)
        first_high = np.minimum.reduceat(np.where(column == np.repeat(high, sizes), index, n), starts)
        low_first = first_low <= first_high
        out[k, 0::2] = np.where(low_first, low, high)
        out[k, 1::2] = np.where(low_first, high, low)
    out_steps = np.empty(2 * buckets, np.int64)
    out_steps[0::2], out_steps[1::2] = steps[starts], steps[starts + sizes - 1]
    unions: list[set[str]] = [set() for _ in range(buckets)]
    for i, text in flagged.items():
        unions[np.searchsorted(starts, i, side="right") - 1].update(text.split())
    out_flags = [sorted(union) for union in unions for _ in range(2)]
    return out_steps, out, out_flags


# -- answers -------------------------------------------------------------------------------


def nested(read: dict) -> dict:
    """Gives History.read's answer as the JSON of GET /history: top-level columns, then
    {"parameters": {name: {statistic: column}}, "activations": ...}; NaN as null, infinities
    as "Infinity" and "-Infinity"."""
    columns = read["columns"]
    answer: dict = {"step": read["step"]}
    answer.update((name, _json_column(columns.get(name, np.empty(0)))) for name in TOP)
    groups: dict = {group: {} for group in GROUPS}
    for flat, column in columns.items():
        group, _, rest = flat.partition(".")
        if group in GROUPS:
            name, _, statistic = rest.rpartition(".")
            groups[group].setdefault(name, {})[statistic] = _json_column(column)
    return {**answer, **groups, "flags": read["flags"], "total": read["total"], "downsampled": read["downsampled"]}


def _json_column(column: np.ndarray):
    if np.isinf(column).any():
        return [None if math.isnan(v) else (v if math.isfinite(v) else ("Infinity" if v > 0 else "-Infinity"))
                for v in column.tolist()]
    return column  # orjson writes NaN in an array as null


def to_json(read: dict) -> bytes:
    return orjson.dumps(nested(read), option=orjson.OPT_SERIALIZE_NUMPY)


def csv_names(read: dict) -> list[str]:
    """Gives the CSV columns of a read, after `step` and before `flags`: TOP's, then the
    parameters' and activations'."""
    return [*TOP, *(name for name in read["columns"] if name not in TOP)]


def to_csv(read: dict, names: list[str] | None = None, header: bool = True) -> str:
    """Gives the records as CSV (columns `names`, csv_names if None), a header row first if
    asked: one row per record; an empty field is none, a flags field holds the flags separated
    by spaces."""
    columns = read["columns"]
    names = csv_names(read) if names is None else names
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["step", *names, "flags"])
    table = [columns[name].tolist() if name in columns else [math.nan] * len(read["step"]) for name in names]
    for i, step in enumerate(read["step"].tolist()):
        writer.writerow([step, *(None if math.isnan(column[i]) else column[i] for column in table),
                         " ".join(read["flags"][i])])
    return out.getvalue()
