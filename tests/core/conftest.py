"""The one helper every gradient test goes through: build a float64 model, gradcheck it."""

from __future__ import annotations

import numpy as np
import pytest

from core import Model, gradcheck


def check_gradients(layers: list[dict], input_shape: tuple[int, ...], loss: str | dict = "mse", *,
                    labels: bool = False, train: bool = True, seed: int = 0, fixed_shape: bool = False,
                    **options) -> None:
    """Assert that a float64 model of `layers` passes an exhaustive gradient check
    (`fixed_shape`: the spec gives input_shape, one example's shape, so every size is inferred).

    A model that starts with an embedding gets class indices as inputs (its parameters are
    checked, not its inputs); labels are (N,) or (N, T) for (N, C) or (N, T, C) outputs, a
    third of them set to the loss's ignore_index when it has one.
    """
    loss_spec = {"type": loss} if isinstance(loss, str) else loss
    spec = {"layers": layers, "loss": loss_spec, "dtype": "float64", "seed": seed}
    if fixed_shape:
        spec["input_shape"] = list(input_shape[1:])
    model = Model.from_spec(spec)
    rng = np.random.default_rng(seed + 1)
    classes = model.input_rule.classes
    x = rng.standard_normal(input_shape) if classes is None else rng.integers(0, classes, input_shape)
    out_shape = model.output_shape(x.shape)
    if labels:
        targets = rng.integers(0, out_shape[-1], out_shape[:-1])
        if loss_spec.get("ignore_index") is not None:
            targets[rng.random(targets.shape) < 1 / 3] = loss_spec["ignore_index"]
    elif loss_spec["type"] == "bce_with_logits":
        targets = rng.uniform(0, 1, out_shape)
    elif loss_spec["type"] == "softmax_cross_entropy":
        targets = rng.dirichlet(np.ones(out_shape[-1]), out_shape[:-1])
    else:
        targets = rng.standard_normal(out_shape)
    report = gradcheck(model, x, targets, max_entries=None, train=train, **options)
    failed = {k: v for k, v in report.parameters.items() if not v.passed}
    assert report.passed, f"failed: {failed or 'inputs'} {report.inputs}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
