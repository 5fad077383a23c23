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
from pathlib import Path

import numpy as np
import orjson

# Records buffered before they are written even if no checkpoint is (durability none/interval).
BUFFERED = 256
TOP = ("time", "lr", "loss", "grad_norm", "update_norm")  # a record's own numbers, after `step`
GROUPS = ("parameters", "activations")  # nested: {name: {statistic: value}}

SCHEMA = """
CREATE TABLE IF NOT EXISTS columns (position INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, record BLOB NOT NULL, flags TEXT NOT NULL);
"""


def flatten(record: dict) -> dict[str, float | None]:
    """Gives a step record (core's Model.step_record, with `time`) as {flat column name: value}."""
    flat = {name: record[name] for name in TOP}
    for group in GROUPS:
        for name, stats in record[group].items():
            for statistic, value in stats.items():
                flat[f"{group}.{name}.{statistic}"] = value
    return flat


class History:
    """The records of one model, in its own SQLite file."""

    def __init__(self, path: Path, steps_kept: int):
        """Opens (or creates) the file at `path`, deleting any record beyond step `steps_kept`:
        the model's checkpoint holds that many steps."""
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)  # used by one request at a time
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed record survives a power loss
        self._db.executescript(SCHEMA)
        with self._db:
            self._db.execute("DELETE FROM steps WHERE step > ?", (steps_kept,))
        self.columns = [name for (name,) in self._db.execute("SELECT name FROM columns ORDER BY position")]
        self._position = {name: i for i, name in enumerate(self.columns)}
        self._new_columns: list[str] = []
        self._buffer: list[tuple[int, bytes, str]] = []
        self.last: dict = {"loss": None, "flags": []}
        row = self._db.execute("SELECT record, flags FROM steps ORDER BY step DESC LIMIT 1").fetchone()
        if row is not None:
            values = np.frombuffer(row[0])
            loss = values[self._position["loss"]]
            self.last = {"loss": None if math.isnan(loss) else float(loss), "flags": row[1].split()}

    def append(self, record: dict) -> None:
        """Buffers the record of a step just taken (written by the next flush)."""
        flat = flatten({**record, "time": time.time()})
        for name in flat:
            if name not in self._position:
                self._position[name] = len(self.columns)
                self.columns.append(name)
                self._new_columns.append(name)
        values = np.full(len(self.columns), np.nan)
        for name, value in flat.items():
            if value is not None:
                values[self._position[name]] = value
        flags = " ".join(record["flags"])
        self._buffer.append((record["step"], values.tobytes(), flags))
        self.last = {"loss": record["loss"], "flags": record["flags"]}
        if len(self._buffer) >= BUFFERED:
            self.flush()

    @property
    def buffered(self) -> int:
        """Gives the records not yet written."""
        return len(self._buffer)

    def flush(self) -> None:
        """Writes the buffered records in one transaction (synced to disk before it returns)."""
        if not self._buffer:
            return
        with self._db:  # one transaction
            if self._new_columns:
                start = len(self.columns) - len(self._new_columns)
                self._db.executemany("INSERT INTO columns VALUES (?, ?)",
                                     enumerate(self._new_columns, start))
            self._db.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", self._buffer)
        self._new_columns, self._buffer = [], []

    def read(self, since: int | None = None, limit: int | None = None, points: int | None = None) -> dict:
        """Gives the records with step > `since` (all if None), the first `limit` of them,
        downsampled to at most `points`: {"step": ints, "flags": [[str]], "columns": {flat
        name: float64 array}, "total": records after `since`, "downsampled": bool}."""
        self.flush()
        after = -1 if since is None else since
        rows = self._db.execute("SELECT step, record, flags FROM steps WHERE step > ? ORDER BY step LIMIT ?",
                                (after, -1 if limit is None else limit)).fetchall()
        total = len(rows) if limit is None or len(rows) < limit else \
            self._db.execute("SELECT count(*) FROM steps WHERE step > ?", (after,)).fetchone()[0]
        steps, blobs, flag_texts = zip(*rows) if rows else ((), (), ())
        steps = np.array(steps, dtype=np.int64)
        values = _matrix(blobs, len(self.columns))
        flags = [text.split() if text else [] for text in flag_texts]
        downsampled = points is not None and len(rows) > points
        if downsampled:
            steps, values, flags = downsample(steps, values, flags, points)
        columns = dict(zip(self.columns, np.ascontiguousarray(values.T)))
        return {"step": steps, "flags": flags, "columns": columns, "total": total, "downsampled": downsampled}

    def close(self) -> None:
        self._db.close()

    def remove(self) -> None:
        """Closes the file and deletes it."""
        self.close()
        remove(self.path)


def remove(path: Path) -> None:
    """Deletes a history file with its WAL journal."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _matrix(blobs: tuple[bytes, ...], width: int) -> np.ndarray:
    """Gives records' float64 blobs as rows of a (records, width) matrix, NaN where a record
    predates a column."""
    if blobs and len(blobs[0]) == len(blobs[-1]) == 8 * width:  # no column added since the first: one read
        return np.frombuffer(b"".join(blobs)).reshape(len(blobs), width)
    out = np.full((len(blobs), width), np.nan)
    by_width: dict[int, list[int]] = {}
    for i, blob in enumerate(blobs):
        by_width.setdefault(len(blob) // 8, []).append(i)
    for columns, rows in by_width.items():
        out[rows, :columns] = np.frombuffer(b"".join(blobs[i] for i in rows)).reshape(len(rows), columns)
    return out


def downsample(steps: np.ndarray, values: np.ndarray, flags: list[list[str]], points: int):
    """Gives at most `points` rows for (steps, values, flags): consecutive records in points // 2
    buckets, each giving two rows, at its first and its last step, where every column holds its
    bucket's minimum and maximum in the order they came (NaN ignored), and the flags of the whole
    bucket."""
    n = len(steps)
    buckets = max(1, points // 2)
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    ends = np.append(starts[1:], n) - 1
    low = np.fmin.reduceat(values, starts, axis=0)
    high = np.fmax.reduceat(values, starts, axis=0)
    # Where each column's minimum and maximum first occur in their bucket.
    row = np.arange(n)[:, None]
    spread = np.repeat(np.arange(buckets), np.diff(np.append(starts, n)))
    first_low = np.minimum.reduceat(np.where(values == low[spread], row, n), starts, axis=0)
    first_high = np.minimum.reduceat(np.where(values == high[spread], row, n), starts, axis=0)
    low_first = first_low <= first_high
    out = np.empty((2 * buckets, values.shape[1]))
    out[0::2] = np.where(low_first, low, high)
    out[1::2] = np.where(low_first, high, low)
    out_steps = np.empty(2 * buckets, np.int64)
    out_steps[0::2], out_steps[1::2] = steps[starts], steps[ends]
    out_flags = []
    for start, end in zip(starts, ends):
        union = sorted({flag for row_flags in flags[start:end + 1] for flag in row_flags})
        out_flags += [union, union]
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


def to_csv(read: dict) -> str:
    """Gives the records as CSV: a header of flat column names (step, then TOP's, then the
    parameters' and activations', then flags), one row per record; an empty field is none, a
    flags field holds the flags separated by spaces."""
    columns = read["columns"]
    names = [*TOP, *(name for name in columns if name not in TOP)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *names, "flags"])
    table = [columns[name].tolist() if name in columns else [math.nan] * len(read["step"]) for name in names]
    for i, step in enumerate(read["step"].tolist()):
        writer.writerow([step, *(None if math.isnan(column[i]) else column[i] for column in table),
                         " ".join(read["flags"][i])])
    return out.getvalue()
