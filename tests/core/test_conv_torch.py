"""Image layers against PyTorch: outputs, input gradient, parameter gradients and state_dict names."""

from __future__ import annotations

import numpy as np
import pytest

from core import Model
from tests.optional import need

torch = need("torch", "pip install torch==2.13.0 (a CPU build; .ci/run installs it)")
nn = torch.nn


def compare(layers: list[dict], module, x_shape, *, train: bool = True, input_shape: bool = False, seed: int = 0):
    """Run the same float64 parameters through gradserve and `module`; compare everything."""
    spec = {"layers": layers, "dtype": "float64", "seed": seed}
    if input_shape:
        spec["input_shape"] = list(x_shape[1:])
    model = Model.from_spec(spec)
    rng = np.random.default_rng(seed + 1)
    # Random biases and norm scales too, so that a zero-bias symmetry cannot hide a mistake.
    model.set_parameters({name: rng.standard_normal(p.shape) * 0.5 + (name.endswith("weight") and p.ndim == 1)
                          for name, p in model.parameters().items()})
    module = module.double()
    state = {name: torch.from_numpy(v.copy()) for name, v in {**model.parameters(), **model.buffers()}.items()}
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    module.load_state_dict(state, strict=True)
    module.train(train)

    x = rng.standard_normal(x_shape)
    outputs, tape = model.forward(x, train=train)
    grad_output = rng.standard_normal(outputs.shape)
    grad_x = model.backward(tape, grad_output)

    xt = torch.from_numpy(x).requires_grad_()
    yt = module(xt)
    yt.backward(torch.from_numpy(grad_output))
    np.testing.assert_allclose(outputs, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    named = dict(module.named_parameters())
    for name, g in model.gradients().items():
        np.testing.assert_allclose(g, named[name].grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)
    for name, b in model.buffers().items():
        np.testing.assert_allclose(b, module.state_dict()[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("options", [
    {"kernel_size": 3},
    {"kernel_size": 3, "stride": 2},
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": 3, "dilation": 2},
    {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]},
    {"kernel_size": 1},
    {"kernel_size": 1, "stride": 2},
    {"kernel_size": [2, 3], "stride": [3, 2], "padding": [2, 0], "dilation": [2, 1]},
])
def test_conv2d(options):
    torch_options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    compare([{"type": "conv2d", "in_channels": 3, "out_channels": 4, **options}],
            nn.Sequential(nn.Conv2d(3, 4, **torch_options)), (2, 3, 9, 8))


@pytest.mark.parametrize("options", [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]},
    {"kernel_size": 3, "stride": 1},
])
@pytest.mark.parametrize("kind, module", [("maxpool2d", nn.MaxPool2d), ("avgpool2d", nn.AvgPool2d)])
def test_pooling(kind, module, options):
    torch_options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    compare([{"type": kind, **options}], nn.Sequential(module(**torch_options)), (2, 3, 9, 8), input_shape=True)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm2d(train):
    compare([{"type": "batchnorm", "num_features": 3, "momentum": 0.2}],
            nn.Sequential(nn.BatchNorm2d(3, momentum=0.2)), (4, 3, 5, 6), train=train, input_shape=True)


LENET = [{"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2}, {"type": "relu"},
         {"type": "maxpool2d", "kernel_size": 2}, {"type": "conv2d", "out_channels": 16, "kernel_size": 5},
         {"type": "batchnorm"}, {"type": "relu"}, {"type": "avgpool2d", "kernel_size": 2}, {"type": "flatten"},
         {"type": "linear", "out_features": 32}, {"type": "relu"}, {"type": "linear", "out_features": 10}]


def torch_lenet():
    """LENET as torch modules (on 20x20 images: 16 channels of 3x3 reach the first linear layer)."""
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 3 * 3, 32),
                         nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("train", [True, False])
def test_a_lenet_checkpoint_loads_into_torch_sequential(train):
    compare(LENET, torch_lenet(), (3, 1, 20, 20), train=train, input_shape=True)


def test_a_saved_float32_lenet_loads_strictly_into_torch(tmp_path):
    model = Model.from_spec({"input_shape": [1, 20, 20], "layers": LENET, "seed": 3})
    model.save(tmp_path / "lenet.safetensors")
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "lenet.safetensors")
    module = torch_lenet().eval()
    module.load_state_dict(tensors, strict=True)
    x = np.random.default_rng(0).standard_normal((2, 1, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x)[0], module(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
