"""Checkpoints: a saved and reloaded model trains on exactly as the original would have."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy

from core import CheckpointError, Model

MLP = [
    {"type": "linear", "in_features": 4, "out_features": 8},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "dropout", "p": 0.3},
    {"type": "residual", "layers": [{"type": "linear", "out_features": 8}, {"type": "tanh"}]},
    {"type": "linear", "out_features": 3},
]
OPTIMIZERS = {
    "adam": {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
    "sgd-momentum": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "rmsprop-centered": {"type": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
}


def make(optimizer: dict, layers=MLP, seed: int = 11) -> Model:
    return Model.from_spec({"layers": layers, "loss": {"type": "softmax_cross_entropy"},
                            "optimizer": optimizer, "seed": seed})


def batches(count: int, n: int = 16):
    rng = np.random.default_rng(123)
    return [(rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)) for _ in range(count)]


def train(model: Model, data) -> None:
    for x, t in data:
        model.forward_backward(x, t)
        model.step()


def full_state(model: Model) -> dict[str, np.ndarray]:
    state = {**model.parameters(), **model.buffers()}
    for name, slots in model.optimizer.state.items():
        for slot, value in slots.items():
            state[f"optimizer.{name}.{slot}"] = value
    return {k: np.array(v, copy=True) for k, v in state.items()}


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_save_load_then_train_equals_training_straight(opt, tmp_path):
    k, m = 4, 5
    data = batches(k + m)
    straight = make(OPTIMIZERS[opt])
    train(straight, data)

    first = make(OPTIMIZERS[opt])
    train(first, data[:k])
    path = tmp_path / "model.safetensors"
    first.save(path)
    assert path.stat().st_size > 0
    resumed = Model.load(path)
    assert resumed.step_count == k
    train(resumed, data[k:])

    assert resumed.step_count == straight.step_count == k + m
    assert_bit_identical(full_state(resumed), full_state(straight))
    # The dropout stream continued where it was: the next training forward draws the same masks.
    x = data[0][0]
    np.testing.assert_array_equal(resumed.forward(x, train=True)[0], straight.forward(x, train=True)[0])


def test_dropout_masks_depend_on_the_restored_generator(tmp_path):
    # Without the generator state, the resumed run would draw the masks of step 0 again.
    model = make(OPTIMIZERS["adam"])
    train(model, batches(3))
    model.save(tmp_path / "a.safetensors")
    fresh = make(OPTIMIZERS["adam"])
    x = batches(1)[0][0]
    resumed = Model.load(tmp_path / "a.safetensors")
    fresh.set_parameters(resumed.parameters())
    assert not np.array_equal(resumed.forward(x, train=True)[0], fresh.forward(x, train=True)[0])


def test_checkpoint_with_pending_gradients_resumes_the_same(tmp_path):
    data = batches(3)
    straight = make(OPTIMIZERS["adam"])
    train(straight, data[:1])
    straight.forward_backward(*data[1])
    saved = Model.from_bytes(straight.to_bytes())
    assert saved.accumulated == straight.accumulated == 1
    for model in (straight, saved):
        model.forward_backward(*data[2])  # accumulates onto the pending gradients
        model.step()
    assert_bit_identical(full_state(saved), full_state(straight))
    assert saved.step_record()["loss"] == straight.step_record()["loss"]  # the mean of both batches' losses


def test_bytes_round_trip_keeps_everything():
    model = make(OPTIMIZERS["sgd-momentum"])
    train(model, batches(2))
    data = model.to_bytes()
    again = Model.from_bytes(data)
    assert again.spec == model.spec
    assert (again.step_count, again.version, again.dtype) == (model.step_count, model.version, model.dtype)
    assert_bit_identical(full_state(again), full_state(model))
    assert again.rng.bit_generator.state == model.rng.bit_generator.state
    # Not the same bytes: safetensors writes the metadata map in no fixed order. The same content, though.
    meta, tensors = header_and_tensors(again.to_bytes())
    meta0, tensors0 = header_and_tensors(data)
    assert meta == meta0
    assert_bit_identical(tensors, tensors0)
    x = batches(1)[0][0]
    np.testing.assert_array_equal(again.forward(x)[0], model.forward(x)[0])


def test_float64_round_trip_is_bit_exact():
    model = Model.from_spec({"layers": MLP, "loss": {"type": "mse"}, "optimizer": OPTIMIZERS["adam"],
                             "dtype": "float64"})
    x = np.random.default_rng(0).standard_normal((8, 4))
    model.forward_backward(x, np.zeros((8, 3)))
    model.step()
    again = Model.from_bytes(model.to_bytes())
    assert again.parameters()["0.weight"].dtype == np.float64
    assert_bit_identical(full_state(again), full_state(model))


def test_without_optimizer_the_names_are_torchs_state_dict():
    model = make(OPTIMIZERS["adam"])
    train(model, batches(1))
    model.forward_backward(*batches(1)[0])  # pending gradients must not be written either
    tensors = safetensors.numpy.load(model.to_bytes(include_optimizer=False))
    # torch.nn.Sequential(Linear(4, 8), BatchNorm1d(8), ReLU(), Dropout(0.3), Residual(block=Sequential(
    # Linear(8, 8), Tanh())), Linear(8, 3)).state_dict()
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "0.weight": (8, 4), "0.bias": (8,),
        "1.weight": (8,), "1.bias": (8,), "1.running_mean": (8,), "1.running_var": (8,),
        "1.num_batches_tracked": (),
        "4.block.0.weight": (8, 8), "4.block.0.bias": (8,),
        "5.weight": (3, 8), "5.bias": (3,),
    }
    assert tensors["1.num_batches_tracked"].dtype == np.int64 and int(tensors["1.num_batches_tracked"]) == 2
    assert all(v.dtype == np.float32 for k, v in tensors.items() if k != "1.num_batches_tracked")


def test_without_optimizer_rnn_names_are_torchs():
    model = Model.from_spec({"layers": [{"type": "rnn", "input_size": 3, "hidden_size": 5},
                                        {"type": "linear", "out_features": 2}], "loss": {"type": "mse"}})
    tensors = safetensors.numpy.load(model.to_bytes(include_optimizer=False))
    # torch.nn.RNN(3, 5, batch_first=True) inside a Sequential, then Linear(5, 2)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "0.weight_ih_l0": (5, 3), "0.weight_hh_l0": (5, 5), "0.bias_ih_l0": (5,), "0.bias_hh_l0": (5,),
        "1.weight": (2, 5), "1.bias": (2,),
    }


def test_without_optimizer_loads_with_fresh_optimizer_state():
    model = make(OPTIMIZERS["adam"])
    train(model, batches(2))
    again = Model.from_bytes(model.to_bytes(include_optimizer=False))
    for name, p in model.parameters().items():
        assert np.array_equal(again.parameters()[name], p)
    assert all(not slots for slots in again.optimizer.state.values())


# ---- damaged checkpoints ------------------------------------------------------------------------

def good_checkpoint() -> tuple[Model, bytes]:
    model = make(OPTIMIZERS["adam"])
    train(model, batches(1))
    return model, model.to_bytes()


def header_and_tensors(data: bytes):
    meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    return meta, dict(safetensors.numpy.load(data))


@pytest.mark.parametrize("cut", [0, 4, 8, 20, 0.5, -1])
def test_truncated_checkpoints_are_refused(cut):
    _, data = good_checkpoint()
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    with pytest.raises(CheckpointError):
        Model.from_bytes(data[:end])


def test_truncated_file_is_refused_by_load(tmp_path):
    _, data = good_checkpoint()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError):
        Model.load(path)


@pytest.mark.parametrize("garbage", [
    b"",
    b"not a checkpoint at all, just some text that is long enough",
    np.random.default_rng(0).bytes(4096),
    (12).to_bytes(8, "little") + b"[1, 2, 3]   ",          # a header that is not an object
    (2).to_bytes(8, "little") + b"{}",                       # valid safetensors, no metadata
    (10).to_bytes(8, "little") + b"\xff\xfe\xfd" * 4,         # header bytes that are not UTF-8
])
def test_garbage_is_refused(garbage):
    with pytest.raises(CheckpointError):
        Model.from_bytes(garbage)


def test_plain_safetensors_without_gradserve_metadata_is_refused():
    model, _ = good_checkpoint()
    data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in model.parameters().items()})
    with pytest.raises(CheckpointError, match="not a gradserve checkpoint"):
        Model.from_bytes(data)


def rewrite(data: bytes, edit) -> bytes:
    meta, tensors = header_and_tensors(data)
    edit(meta, tensors)
    return safetensors.numpy.save(tensors, metadata=meta)


def _wrong_shape(meta, t):
    t["0.weight"] = np.zeros((8, 5), np.float32)


def _wrong_spec(meta, t):
    spec = json.loads(meta["spec"])
    spec["layers"][0]["out_features"] = 9
    spec["layers"][1]["num_features"] = 9
    spec["layers"][4]["layers"][0]["in_features"] = 9
    spec["layers"][4]["layers"][0]["out_features"] = 9
    spec["layers"][5]["in_features"] = 9
    meta["spec"] = json.dumps(spec)


def _wrong_state_shape(meta, t):
    t["optimizer.0.weight.exp_avg"] = np.zeros((4, 8), np.float32)


def _wrong_dtype(meta, t):
    t["5.bias"] = t["5.bias"].astype(np.float64)


def _non_finite(meta, t):
    t["5.weight"][0, 0] = np.nan


def _missing(meta, t):
    del t["4.block.0.weight"]


def _unexpected(meta, t):
    t["7.weight"] = np.zeros((2, 2), np.float32)


def _bad_step(meta, t):
    t["optimizer.0.weight.step"] = np.zeros((), np.float32)


def _incomplete_optimizer_state(meta, t):
    del t["optimizer.0.weight.step"]  # Adam would silently restart its bias correction


def _invalid_spec(meta, t):
    meta["spec"] = json.dumps({"layers": []})


def _unparsable_spec(meta, t):
    meta["spec"] = "{not json"


def _bad_step_count(meta, t):
    meta["step"] = "many"


@pytest.mark.parametrize("edit", [_wrong_shape, _wrong_spec, _wrong_state_shape, _wrong_dtype, _non_finite,
                                  _missing, _unexpected, _bad_step, _incomplete_optimizer_state, _invalid_spec, _unparsable_spec,
                                  _bad_step_count])
def test_inconsistent_checkpoints_are_refused(edit):
    _, data = good_checkpoint()
    Model.from_bytes(rewrite(data, lambda meta, t: None))  # the rewrite itself keeps a good checkpoint good
    with pytest.raises(CheckpointError):
        Model.from_bytes(rewrite(data, edit))


def test_save_leaves_no_temporary_file(tmp_path):
    model, _ = good_checkpoint()
    model.save(tmp_path / "m.safetensors")
    model.save(tmp_path / "m.safetensors")  # overwriting works too
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_resume_is_bit_identical_for_a_model_with_big_parameters(tmp_path):
    # Big enough that optimizer state is updated in chunks: the loaded state must be updated the same way.
    spec = {"layers": [{"type": "linear", "in_features": 400, "out_features": 400}, {"type": "tanh"},
                       {"type": "linear", "out_features": 2}],
            "loss": {"type": "mse"}, "optimizer": {"type": "adamw", "lr": 1e-3}, "seed": 3}
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((8, 400)), rng.standard_normal((8, 2))) for _ in range(5)]
    straight = Model.from_spec(spec)
    first = Model.from_spec(spec)
    for i, (x, t) in enumerate(data):
        straight.forward_backward(x, t)
        straight.step()
        if i < 2:
            first.forward_backward(x, t)
            first.step()
    first.save(tmp_path / "big.safetensors")
    resumed = Model.load(tmp_path / "big.safetensors")
    for x, t in data[2:]:
        resumed.forward_backward(x, t)
        resumed.step()
    assert_bit_identical(full_state(resumed), full_state(straight))


def test_loading_applies_the_callers_limits():
    model, data = good_checkpoint()
    assert Model.from_bytes(data, max_parameters=model.num_parameters).num_parameters == model.num_parameters
    with pytest.raises(CheckpointError, match="max_parameters"):
        Model.from_bytes(data, max_parameters=model.num_parameters - 1)
