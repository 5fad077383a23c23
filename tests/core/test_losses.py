"""Every loss passes a float64 gradient check and gives the value of its definition."""

import numpy as np
import pytest

from core import InputError, Model
from core import losses
from tests.core.conftest import check_gradients

LIN = {"type": "linear", "in_features": 4, "out_features": 3}


def test_softmax_cross_entropy_labels():
    check_gradients([LIN], (5, 4), "softmax_cross_entropy", labels=True)


def test_softmax_cross_entropy_probabilities():
    check_gradients([LIN], (5, 4), "softmax_cross_entropy")


def test_mse():
    check_gradients([LIN], (5, 4), "mse")


def test_bce_with_logits():
    check_gradients([LIN], (5, 4), "bce_with_logits")


@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_huber(delta):
    check_gradients([LIN], (5, 4), {"type": "huber", "delta": delta})


def test_values_match_their_definitions():
    z = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = np.array([0, 2])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert losses.softmax_cross_entropy(z, labels)[0] == pytest.approx(-np.log(p[[0, 1], labels]).mean())
    t = np.array([[1.0, 0.0, 0.5], [0.2, 0.3, 1.0]])
    assert losses.mse(z, t)[0] == pytest.approx(((z - t) ** 2).mean())
    s = 1 / (1 + np.exp(-z))
    assert losses.bce_with_logits(z, t)[0] == pytest.approx(-(t * np.log(s) + (1 - t) * np.log(1 - s)).mean())
    d = np.abs(z - t)
    expected = np.where(d <= 0.5, 0.5 * d**2, 0.5 * (d - 0.25)).mean()
    assert losses.huber(z, t, delta=0.5)[0] == pytest.approx(expected)


def test_losses_are_stable_for_huge_logits():
    z = np.array([[1000.0, -1000.0]], dtype=np.float32)
    loss, grad = losses.softmax_cross_entropy(z, np.array([1]))
    assert loss == pytest.approx(2000.0) and np.isfinite(grad).all()
    loss, grad = losses.bce_with_logits(z, np.array([[0.0, 1.0]], dtype=np.float32))
    assert loss == pytest.approx(1000.0) and np.isfinite(grad).all()


def test_labels_out_of_range_are_an_error():
    model = Model.from_spec({"layers": [LIN], "loss": {"type": "softmax_cross_entropy"}})
    with pytest.raises(InputError) as e:
        model.forward_backward(np.ones((2, 4)), np.array([0, 3]))
    assert e.value.errors[0]["loc"] == ["targets"] and "[0, 3)" in e.value.errors[0]["msg"]
    assert model.accumulated == 0


def test_float_labels_are_refused():
    model = Model.from_spec({"layers": [LIN], "loss": {"type": "softmax_cross_entropy"}})
    with pytest.raises(InputError, match="integers"):
        model.forward_backward(np.ones((2, 4)), np.array([0.0, 1.0]))
