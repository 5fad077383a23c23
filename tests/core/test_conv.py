"""Convolution, pooling and batchnorm on images: gradients, a hand-worked case, shapes and spec errors."""

import numpy as np
import pytest

from core import InputError, Model, SpecError
from tests.core.conftest import check_gradients


def conv(**options):
    return {"type": "conv2d", "out_channels": 3, "kernel_size": 3, **options}


# ---- gradients: one line per layer and option -----------------------------------------------

def test_conv2d():
    check_gradients([conv(in_channels=2)], (2, 2, 5, 5))


def test_conv2d_stride():
    check_gradients([conv(in_channels=2, stride=2)], (2, 2, 7, 6))


def test_conv2d_padding():
    check_gradients([conv(in_channels=2, padding=1)], (2, 2, 4, 4))


def test_conv2d_dilation():
    check_gradients([conv(in_channels=1, dilation=2)], (2, 1, 7, 7))


def test_conv2d_non_square_kernel_stride_padding_dilation():
    check_gradients([conv(in_channels=2, kernel_size=[3, 2], stride=[2, 1], padding=[0, 1], dilation=[1, 2])],
                    (2, 2, 7, 6))


def test_conv2d_1x1():
    check_gradients([conv(in_channels=4, kernel_size=1)], (3, 4, 2, 3))


def test_maxpool2d():
    check_gradients([conv(in_channels=1), {"type": "maxpool2d", "kernel_size": 2}], (2, 1, 6, 6))


def test_maxpool2d_overlapping_with_padding():
    check_gradients([conv(in_channels=1), {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}],
                    (2, 1, 7, 7))


def test_maxpool2d_non_square():
    check_gradients([conv(in_channels=1), {"type": "maxpool2d", "kernel_size": [2, 3], "stride": [1, 2]}],
                    (2, 1, 6, 7))


def test_avgpool2d():
    check_gradients([conv(in_channels=1), {"type": "avgpool2d", "kernel_size": 2}], (2, 1, 6, 6))


def test_avgpool2d_with_padding_counted():
    check_gradients([conv(in_channels=1), {"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1}],
                    (2, 1, 7, 7))


def test_batchnorm2d_train():
    check_gradients([conv(in_channels=2), {"type": "batchnorm"}, conv()], (3, 2, 5, 5))


def test_batchnorm2d_eval():
    check_gradients([conv(in_channels=2), {"type": "batchnorm"}, conv()], (3, 2, 5, 5), train=False)


def test_lenet_like_stack_with_input_shape():
    check_gradients([conv(padding=1), {"type": "tanh"}, {"type": "maxpool2d", "kernel_size": 2},
                     conv(out_channels=4, kernel_size=2), {"type": "relu"}, {"type": "flatten"},
                     {"type": "linear", "out_features": 5}, {"type": "relu"}, {"type": "linear", "out_features": 3}],
                    (3, 2, 6, 6), "softmax_cross_entropy", labels=True, fixed_shape=True)


# ---- a 2x2 convolution by hand --------------------------------------------------------------

def test_a_2x2_convolution_by_hand():
    # One 3x3 image, one 2x2 kernel, stride 1: each output is the sum of its window times the kernel.
    model = Model.from_spec({"layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 2}],
                             "loss": {"type": "mse"}, "dtype": "float64"})
    model.set_parameters({"0.weight": np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), "0.bias": np.array([0.5])})
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    outputs, tape = model.forward(x, train=True)
    # 1*1 + 2*2 + 3*4 + 4*5 + 0.5 = 37.5; each step right adds 1+2+3+4 = 10, each step down 3 * 10.
    np.testing.assert_allclose(outputs, [[[[37.5, 47.5], [67.5, 77.5]]]])
    grad_output = np.array([[[[1.0, 0.0], [0.0, 2.0]]]])
    grad_x = model.backward(tape, grad_output)
    # dL/dw[i, j] = sum over outputs of g[y, x] * x[y + i, x + j] = 1 * x[i, j] + 2 * x[1 + i, 1 + j].
    np.testing.assert_allclose(model.gradients()["0.weight"], [[[[1 + 2 * 5, 2 + 2 * 6], [4 + 2 * 8, 5 + 2 * 9]]]])
    np.testing.assert_allclose(model.gradients()["0.bias"], [3.0])
    # dL/dx: the kernel placed at each output, scaled by its gradient: w at (0, 0), 2w at (1, 1).
    np.testing.assert_allclose(grad_x, [[[[1, 2, 0], [3, 4 + 2, 4], [0, 6, 8]]]])


def test_pools_by_hand():
    x = np.array([[[[1.0, 5.0, 2.0], [3.0, 4.0, 8.0], [0.0, 7.0, 6.0]]]])
    maxpool = Model.from_spec({"layers": [{"type": "maxpool2d", "kernel_size": 2, "stride": 1}], "dtype": "float64",
                               "input_shape": [1, 3, 3]})
    outputs, tape = maxpool.forward(x)
    np.testing.assert_array_equal(outputs, [[[[5, 8], [7, 8]]]])
    # 8 is the maximum of two windows: both of their gradients reach it.
    np.testing.assert_array_equal(maxpool.backward(tape, np.array([[[[1.0, 2.0], [3.0, 4.0]]]])),
                                  [[[[0, 1, 0], [0, 0, 6], [0, 3, 0]]]])
    avgpool = Model.from_spec({"layers": [{"type": "avgpool2d", "kernel_size": 2, "padding": 1}], "dtype": "float64",
                               "input_shape": [1, 3, 3]})
    outputs, _ = avgpool.forward(x)
    # Padding zeros count: the corner window holds 1 and three zeros.
    np.testing.assert_array_equal(outputs, [[[[1 / 4, 7 / 4], [3 / 4, 25 / 4]]]])


# ---- shapes and spec errors -----------------------------------------------------------------

LENET = [{"type": "conv2d", "out_channels": 6, "kernel_size": 5}, {"type": "relu"},
         {"type": "maxpool2d", "kernel_size": 2}, {"type": "conv2d", "out_channels": 16, "kernel_size": 5},
         {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
         {"type": "linear", "out_features": 120}, {"type": "relu"}, {"type": "linear", "out_features": 10}]


def errors_of(spec):
    with pytest.raises(SpecError) as e:
        Model.from_spec(spec)
    return e.value.errors


def test_input_shape_chains_sizes_through_convolutions_and_flatten():
    model = Model.from_spec({"input_shape": [1, 28, 28], "layers": LENET})
    assert model.spec["layers"][3]["in_channels"] == 6 and model.spec["layers"][7]["in_features"] == 16 * 4 * 4
    assert model.parameter_shapes()["0.weight"] == (6, 1, 5, 5) and model.parameter_shapes()["3.bias"] == (16,)
    assert model.num_parameters == sum(int(np.prod(s)) for s in model.parameter_shapes().values())
    assert model.output_shape((7, 1, 28, 28)) == (7, 10)


def test_inputs_must_have_exactly_the_input_shape():
    model = Model.from_spec({"input_shape": [1, 28, 28], "layers": LENET})
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 1, 28, 27), np.float32))
    assert e.value.errors[0]["loc"] == ["inputs"] and "input_shape [1, 28, 28]" in e.value.errors[0]["msg"]


def test_a_kernel_larger_than_its_padded_input_names_the_layer():
    errors = errors_of({"input_shape": [1, 8, 8], "layers": LENET})  # 8 -> 4 -> 2: a 5x5 kernel does not fit
    assert errors[0]["loc"] == ["layers", 3, "kernel_size"] and "smaller than 1" in errors[0]["msg"]
    errors = errors_of({"input_shape": [1, 4, 4], "layers": [{"type": "maxpool2d", "kernel_size": 5}]})
    assert errors[0]["loc"] == ["layers", 0, "kernel_size"]


def test_channels_that_do_not_chain_name_the_layer():
    errors = errors_of({"input_shape": [1, 28, 28], "layers": [{**LENET[0], "in_channels": 3}]})
    assert errors[0]["loc"] == ["layers", 0, "in_channels"]
    assert errors[0]["msg"] == "in_channels=3 does not match the 1 channels the previous layer gives"
    errors = errors_of({"layers": [{**LENET[0], "in_channels": 1}, {"type": "batchnorm", "num_features": 5}]})
    assert errors[0]["loc"] == ["layers", 1, "num_features"] and "6 channels" in errors[0]["msg"]


@pytest.mark.parametrize("layers, loc", [
    ([LENET[0]], ["layers", 0, "in_channels"]),  # no input_shape and no in_channels: no input size
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2}], ["layers", 0, "kernel_size"]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 0]}], ["layers", 0, "kernel_size"]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": -1}],
     ["layers", 0, "padding"]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": [1, 2, 3]}],
     ["layers", 0, "stride"]),
    ([{"type": "maxpool2d", "kernel_size": 2, "padding": 2}], ["layers", 0, "padding"]),
    ([{"type": "linear", "in_features": 4, "out_features": 4}, {"type": "conv2d", "out_channels": 2, "kernel_size": 1}],
     ["layers", 1]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}, {"type": "flatten"},
      {"type": "linear", "out_features": 2}], ["layers", 2, "in_features"]),
])
def test_bad_image_layers(layers, loc):
    assert errors_of({"layers": layers})[0]["loc"] == loc


def test_bad_input_shape():
    assert errors_of({"input_shape": [1, 0, 28], "layers": LENET})[0]["loc"] == ["input_shape"]
    assert errors_of({"input_shape": "28x28", "layers": LENET})[0]["loc"] == ["input_shape"]
    errors = errors_of({"input_shape": [28, 28], "layers": LENET})  # the channel axis left out
    assert errors[0]["loc"] == ["layers", 0] and "(N, C, H, W)" in errors[0]["msg"]


def test_without_input_shape_image_sizes_are_checked_at_run_time():
    layers = [{**LENET[0], "in_channels": 1}, *LENET[1:7], {"type": "linear", "in_features": 256, "out_features": 10}]
    model = Model.from_spec({"layers": layers})
    assert model.forward(np.zeros((2, 1, 28, 28), np.float32))[0].shape == (2, 10)
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 1, 32, 32), np.float32))  # 16 * 5 * 5 features reach the linear layer
    assert "reach layers.7 (linear) with 400 features, it expects 256" in e.value.errors[0]["msg"]
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 1, 8, 8), np.float32))
    assert "layers.3 (conv2d)" in e.value.errors[0]["msg"] and "smaller than 1" in e.value.errors[0]["msg"]
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 3, 28, 28), np.float32))
    assert e.value.errors[0]["msg"] == "inputs have 3 channels, the model expects C=1 (shape [2, 3, 28, 28])"
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 28, 28), np.float32))
    assert "rank 4 (N, C, H, W)" in e.value.errors[0]["msg"]


def test_float32_stays_float32_through_a_cnn_train_step():
    model = Model.from_spec({"input_shape": [1, 12, 12], "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2, "padding": 1}, {"type": "avgpool2d", "kernel_size": 2},
        {"type": "flatten"}, {"type": "linear", "out_features": 3}],
        "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam"}})
    x = np.random.default_rng(0).standard_normal((4, 1, 12, 12))
    outputs, tape = model.forward(x, train=True)
    assert outputs.dtype == np.float32
    loss, g = model.loss(outputs, np.array([0, 1, 2, 0]))
    assert model.backward(tape, g).dtype == np.float32
    assert all(v.dtype == np.float32 for v in model.gradients().values())
    model.step()
    assert all(v.dtype == np.float32 for v in {**model.parameters(), **model.buffers()}.values()
               if v.dtype.kind == "f")


def test_dead_channels_after_a_convolution_are_diagnosed():
    model = Model.from_spec({"input_shape": [1, 6, 6], "layers": [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "relu"}, {"type": "flatten"},
        {"type": "linear", "out_features": 2}], "loss": {"type": "mse"}})
    params = model.parameters()
    params["0.bias"][:3] = -100.0  # three of four channels never fire
    x = np.random.default_rng(0).standard_normal((8, 1, 6, 6))
    model.forward_backward(x, np.zeros((8, 2)))
    report = model.diagnostics()
    relu = next(a for a in report["activations"] if a["name"] == "1")
    assert relu["dead_fraction"] == 0.75 and report["flags"]["dead_relu_layers"] == ["1"]
    conv_layer = report["layers"][0]
    assert conv_layer["type"] == "conv2d" and conv_layer["grad_norm"] > 0
