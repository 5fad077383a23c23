"""Specs are checked whole before anything is allocated; errors name the layer and the problem."""

import numpy as np
import pytest

from core import Model, SpecError

MLP = [{"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
       {"type": "linear", "in_features": 256, "out_features": 10}]


def errors_of(spec, **limits):
    with pytest.raises(SpecError) as e:
        Model.from_spec(spec, **limits)
    return e.value.errors


def test_parameter_names_and_shapes_follow_torch_sequential():
    model = Model.from_spec({"layers": MLP + [{"type": "batchnorm"},
                             {"type": "residual", "layers": [{"type": "linear", "out_features": 10}]}]})
    assert model.parameter_shapes() == {
        "0.weight": (256, 784), "0.bias": (256,), "2.weight": (10, 256), "2.bias": (10,),
        "3.weight": (10,), "3.bias": (10,), "4.block.0.weight": (10, 10), "4.block.0.bias": (10,)}
    assert set(model.buffers()) == {"3.running_mean", "3.running_var", "3.num_batches_tracked"}
    assert model.num_parameters == sum(int(np.prod(s)) for s in model.parameter_shapes().values())


def test_sizes_are_inferred_and_filled_in():
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": 3, "out_features": 4},
                                        {"type": "layernorm"}, {"type": "linear", "out_features": 2}]})
    assert model.spec["layers"][1]["num_features"] == 4 and model.spec["layers"][2]["in_features"] == 4
    assert model.spec["optimizer"] == {"type": "sgd", "lr": 0.01, "momentum": 0.0, "dampening": 0.0,
                                       "nesterov": False, "weight_decay": 0.0, "clip_grad_norm": None,
                                       "clip_grad_value": None}


def test_sizes_that_do_not_chain_name_the_layer():
    errors = errors_of({"layers": [MLP[0], MLP[1], {"type": "linear", "in_features": 100, "out_features": 10}]})
    assert errors[0]["loc"] == ["layers", 2, "in_features"] and "256" in errors[0]["msg"]


@pytest.mark.parametrize("layer, loc", [
    ({"type": "linear", "in_features": 4, "out_features": -3}, ["layers", 0, "out_features"]),
    ({"type": "linear", "in_features": 0, "out_features": 3}, ["layers", 0, "in_features"]),
    ({"type": "linear", "in_features": 4, "out_features": 2.5}, ["layers", 0, "out_features"]),
    ({"type": "linear", "in_features": 4, "out_features": True}, ["layers", 0, "out_features"]),
    ({"type": "conv3d"}, ["layers", 0, "type"]),
    ({"type": "linear", "in_features": 4, "out_features": 3, "bias": False}, ["layers", 0, "bias"]),
    ({"type": "linear", "out_features": 3}, ["layers", 0, "in_features"]),
    ({"type": "rnn", "input_size": 3}, ["layers", 0, "hidden_size"]),
])
def test_bad_layers(layer, loc):
    assert errors_of({"layers": [layer]})[0]["loc"] == loc


def test_bad_options():
    assert errors_of({"layers": [MLP[0], {"type": "dropout", "p": 1.0}]})[0]["loc"] == ["layers", 1, "p"]
    assert errors_of({"layers": MLP, "loss": {"type": "hinge"}})[0]["loc"] == ["loss", "type"]
    assert errors_of({"layers": MLP, "optimizer": {"type": "adam", "lr": -1}})[0]["loc"] == ["optimizer", "lr"]
    assert errors_of({"layers": MLP, "dtype": "float16"})[0]["loc"] == ["dtype"]
    assert errors_of({"layers": MLP, "colour": "red"})[0]["loc"] == ["colour"]
    assert errors_of({"layers": []})[0]["loc"] == ["layers"]


def test_every_problem_is_reported_at_once():
    errors = errors_of({"layers": [{"type": "linear", "in_features": 4, "out_features": -1}, {"type": "nope"}],
                        "dtype": "int8"})
    assert {tuple(e["loc"]) for e in errors} >= {("layers", 0, "out_features"), ("layers", 1, "type"), ("dtype",)}


def test_shape_rules():
    assert errors_of({"layers": [MLP[0], {"type": "rnn", "hidden_size": 4}]})[0]["loc"] == ["layers", 1]
    assert errors_of({"layers": [{"type": "rnn", "input_size": 3, "hidden_size": 4, "return_sequences": True},
                                 {"type": "batchnorm"}]})[0]["loc"] == ["layers", 1]
    errors = errors_of({"layers": [MLP[0], {"type": "residual", "layers": [{"type": "linear", "out_features": 3}]}]})
    assert errors[0]["loc"] == ["layers", 1, "layers"]
    assert "input size" in errors_of({"layers": [{"type": "relu"}]})[0]["msg"]


def test_limits_are_checked_before_allocating():
    # 10^12 parameters would need 4 TB; the check must refuse it from the sizes alone.
    huge = {"layers": [{"type": "linear", "in_features": 10**6, "out_features": 10**6}]}
    errors = errors_of(huge, max_parameters=50_000_000)
    assert errors[0]["type"] == "limit" and "max_parameters=50000000" in errors[0]["msg"]
    many = {"layers": [{"type": "linear", "in_features": 2, "out_features": 2}] + [{"type": "relu"}] * 100_000}
    assert "max_layers=256" in errors_of(many, max_layers=256)[0]["msg"]
    nested = {"type": "relu"}
    for _ in range(50):
        nested = {"type": "residual", "layers": [nested]}
    assert errors_of({"layers": [MLP[0], nested]}, max_layers=1000)


def test_a_valid_spec_round_trips_through_its_normalized_form():
    model = Model.from_spec({"id": "m-1", "layers": MLP, "loss": {"type": "softmax_cross_entropy"},
                             "optimizer": {"type": "adam", "lr": 0.001}, "seed": 7})
    again = Model.from_spec(model.spec)
    assert again.spec == model.spec and model.spec["id"] == "m-1"
    assert all(np.array_equal(model.parameters()[k], again.parameters()[k]) for k in model.parameters())


@pytest.mark.parametrize("delta", ["1", -1, 0, True, float("inf")])
def test_a_huber_delta_must_be_a_positive_number(delta):
    assert errors_of({"layers": MLP, "loss": {"type": "huber", "delta": delta}})[0]["loc"] == ["loss", "delta"]


@pytest.mark.parametrize("workers", [0, -1, 65, 2.0, "2", True])
def test_workers_is_an_integer_from_1_to_64(workers):
    with pytest.raises(SpecError) as e:
        Model.from_spec({"layers": MLP, "workers": workers})
    assert [error["loc"] for error in e.value.errors] == [["workers"]]


def test_workers_stays_in_the_spec_only_when_given():
    assert "workers" not in Model.from_spec({"layers": MLP}).spec
    assert Model.from_spec({"layers": MLP, "workers": 4}).spec["workers"] == 4


def test_signature_gives_a_batchs_shapes_with_none_for_sizes_known_at_run_time():
    assert Model.from_spec({"layers": MLP}).signature() == ((None, 784), (None, 10))
    lstm = [{"type": "lstm", "input_size": 3, "hidden_size": 5, "return_sequences": True}]
    assert Model.from_spec({"layers": lstm}).signature() == ((None, None, 3), (None, None, 5))
