"""A model's training history as NumPy columns (``GET /v1/models/{id}/history``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TOP = ("time", "lr", "loss", "grad_norm", "update_norm")
GROUPS = ("parameters", "activations")


@dataclass(frozen=True)
class StepHistory:
    """One entry per recorded step in every column; NaN where a value is none (no loss, no
    gradient).

    ``columns`` is keyed by the server's CSV names: ``time``, ``lr``, ``loss``, ``grad_norm``,
    ``update_norm``, ``parameters.<name>.<grad_norm|param_norm|update_to_param>`` and
    ``activations.<layer>.<dead_fraction|saturated_fraction>``. ``history["loss"]`` is
    ``history.columns["loss"]``; ``history.parameters["0.weight"]["grad_norm"]`` is the same
    column by parameter.
    """

    step: np.ndarray
    columns: dict[str, np.ndarray]
    flags: list[list[str]]
    total: int  # records the server had after `since`, before `limit`
    downsampled: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> StepHistory:
        columns = {name: _column(body[name]) for name in TOP}
        for group in GROUPS:
            for name, stats in body[group].items():
                for statistic, values in stats.items():
                    columns[f"{group}.{name}.{statistic}"] = _column(values)
        return cls(np.asarray(body["step"], dtype=np.int64), columns, body["flags"], body["total"],
                   body["downsampled"])

    @classmethod
    def concat(cls, pages: list[StepHistory]) -> StepHistory:
        """Returns the pages of one history read one after another, as one."""
        if len(pages) == 1:
            return pages[0]
        names = dict.fromkeys(name for page in pages for name in page.columns)
        columns = {name: np.concatenate([page.columns.get(name, np.full(len(page), np.nan)) for page in pages])
                   for name in names}
        return cls(np.concatenate([page.step for page in pages]), columns,
                   [flags for page in pages for flags in page.flags], pages[0].total,
                   any(page.downsampled for page in pages))

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.step if name == "step" else self.columns[name]

    @property
    def loss(self) -> np.ndarray:
        return self.columns["loss"]

    @property
    def lr(self) -> np.ndarray:
        return self.columns["lr"]

    @property
    def parameters(self) -> dict[str, dict[str, np.ndarray]]:
        return self._group("parameters")

    @property
    def activations(self) -> dict[str, dict[str, np.ndarray]]:
        return self._group("activations")

    def _group(self, group: str) -> dict[str, dict[str, np.ndarray]]:
        nested: dict[str, dict[str, np.ndarray]] = {}
        for flat, column in self.columns.items():
            head, _, rest = flat.partition(".")
            if head == group:
                name, _, statistic = rest.rpartition(".")
                nested.setdefault(name, {})[statistic] = column
        return nested

    def to_pandas(self) -> Any:
        """Returns a pandas DataFrame indexed by step, one column per column and ``flags``."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("StepHistory.to_pandas needs pandas: pip install pandas") from None
        frame = pd.DataFrame(self.columns, index=pd.Index(self.step, name="step"))
        frame["flags"] = [" ".join(flags) for flags in self.flags]
        return frame


def _column(values: list[Any]) -> np.ndarray:
    # null is none (NaN); non-finite numbers arrive as "Infinity" and "-Infinity", which NumPy reads.
    return np.array(values, dtype=np.float64)
