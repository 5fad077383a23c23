"""Properties over random convolution and pooling stacks: shapes are as inferred, gradients check."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Model, gradcheck

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def out_size(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def geometry(draw, h: int, w: int, pool: bool):
    """Return (options, H', W') for a kernel that fits an (h, w) image."""
    k = [draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))]
    s = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    p = [draw(st.integers(0, kk // 2)) for kk in k]
    d = [1, 1] if pool else [draw(st.integers(1, 2)) if (kk - 1) * 2 + 1 <= size else 1 for kk, size in zip(k, (h, w))]
    options = {"kernel_size": k if k[0] != k[1] else k[0], "stride": s, "padding": p}
    if not pool:
        options["dilation"] = d
    return options, out_size(h, k[0], s[0], p[0], d[0]), out_size(w, k[1], s[1], p[1], d[1])


@st.composite
def image_stack(draw):
    """Return (spec, inputs, the output shape worked out here)."""
    n, c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    fixed = draw(st.booleans())  # sizes from input_shape, or from in_channels with H, W known at run time
    layers, shape = [], (c, h, w)
    for i in range(draw(st.integers(1, 4))):
        kinds = ["conv2d", "maxpool2d", "avgpool2d", "tanh", "leaky_relu"] + (["batchnorm"] if n > 1 else [])
        kind = "conv2d" if i == 0 and not fixed else draw(st.sampled_from(kinds))
        if kind in ("tanh", "leaky_relu"):
            layers.append({"type": kind})
        elif kind == "batchnorm":
            layers.append({"type": "batchnorm"})
        else:
            options, hh, ww = draw(geometry(shape[1], shape[2], pool=kind != "conv2d"))
            if kind == "conv2d":
                out_channels = draw(st.integers(1, 3))
                layers.append({"type": "conv2d", "out_channels": out_channels, **options,
                               **({} if fixed and draw(st.booleans()) else {"in_channels": shape[0]})})
                shape = (out_channels, hh, ww)
            else:
                layers.append({"type": kind, **options})
                shape = (shape[0], hh, ww)
    out_shape = (n, *shape)
    if draw(st.booleans()):
        features = shape[0] * shape[1] * shape[2]
        layers += [{"type": "flatten"}, {"type": "linear", "out_features": 2,
                                         **({} if fixed else {"in_features": features})}]
        out_shape = (n, 2)
    spec = {"layers": layers, "loss": {"type": "mse"}, "dtype": "float64", "seed": draw(st.integers(0, 2**16))}
    if fixed:
        spec["input_shape"] = [c, h, w]
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((n, c, h, w))
    return spec, x, out_shape


@SETTINGS
@given(image_stack())
def test_random_image_stacks_keep_their_shapes_and_check(case):
    spec, x, out_shape = case
    model = Model.from_spec(spec)
    rng = np.random.default_rng(0)
    model.set_parameters({name: rng.standard_normal(p.shape) * 0.5 + (name.endswith("weight") and p.ndim == 1)
                          for name, p in model.parameters().items()})
    assert model.output_shape(x.shape) == out_shape
    for train in (False, True):
        outputs, tape = model.forward(x, train=train)
        assert outputs.shape == out_shape
    assert model.backward(tape, np.ones(out_shape)).shape == x.shape
    report = gradcheck(model, x, rng.standard_normal(out_shape), max_entries=None)
    assert report.passed, (spec, report.to_dict())
