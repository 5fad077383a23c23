"""Optimizers against an independent float64 reference of torch.optim's documented update rules.

Each case starts from known parameters, feeds three known gradients (written into the model's
gradient buffers) and compares the parameters after every step with the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import InputError, Model, NonFiniteGradientError, NonFiniteUpdateError, NothingToStepError, SpecError

LAYERS = [
    {"type": "linear", "in_features": 3, "out_features": 4},
    {"type": "tanh"},
    {"type": "linear", "in_features": 4, "out_features": 2},
]
SHAPES = {"0.weight": (4, 3), "0.bias": (4,), "2.weight": (2, 4), "2.bias": (2,)}
STEPS = 3


# Big enough that the optimizer splits the weight into several chunks and spreads them over threads.
BIG_LAYERS = [{"type": "linear", "in_features": 600, "out_features": 500}]
BIG_SHAPES = {"0.weight": (500, 600), "0.bias": (500,)}


def make_model(optimizer: dict, dtype: str = "float64", layers=LAYERS) -> Model:
    return Model.from_spec({"layers": layers, "loss": {"type": "mse"}, "optimizer": optimizer,
                            "dtype": dtype, "seed": 0})


def initial_parameters(seed: int = 1, shapes=SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s) for n, s in shapes.items()}


def gradient_sequence(seed: int = 2, scale: float = 1.0, shapes=SHAPES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: scale * rng.standard_normal(s) for n, s in shapes.items()} for _ in range(STEPS)]


def give_gradients(model: Model, grads: dict[str, np.ndarray]) -> None:
    for name, g in grads.items():
        model.gradients()[name][...] = g
    model.accumulated = 1


def engine_trajectory(optimizer: dict, params, grads_seq, layers=LAYERS) -> list[dict[str, np.ndarray]]:
    model = make_model(optimizer, layers=layers)
    model.set_parameters(params)
    out = []
    for grads in grads_seq:
        give_gradients(model, grads)
        model.step()
        out.append({n: p.copy() for n, p in model.parameters().items()})
    return out


# ---- the reference: torch.optim's documented algorithms, one parameter at a time --------------

def clip(grads: dict, hp: dict) -> dict:
    grads = {n: g.copy() for n, g in grads.items()}
    max_norm = hp.get("clip_grad_norm")
    if max_norm is not None:
        total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        coef = max_norm / (total + 1e-6)  # torch.nn.utils.clip_grad_norm_
        if coef < 1:
            grads = {n: g * coef for n, g in grads.items()}
    value = hp.get("clip_grad_value")
    if value is not None:
        grads = {n: np.clip(g, -value, value) for n, g in grads.items()}
    return grads


def ref_sgd(p, g, state, hp, t):
    lr, mu, tau, wd = hp["lr"], hp.get("momentum", 0.0), hp.get("dampening", 0.0), hp.get("weight_decay", 0.0)
    if wd:
        g = g + wd * p
    if mu:
        state["b"] = g.copy() if t == 1 else mu * state["b"] + (1 - tau) * g
        g = g + mu * state["b"] if hp.get("nesterov") else state["b"]
    return p - lr * g


def ref_adam(p, g, state, hp, t, decoupled=False):
    lr, (b1, b2) = hp["lr"], hp.get("betas", (0.9, 0.999))
    eps = hp.get("eps", 1e-8)
    wd = hp.get("weight_decay", 0.01 if decoupled else 0.0)
    if decoupled:
        p = p * (1 - lr * wd)
    elif wd:
        g = g + wd * p
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1**t)
    v_hat = state["v"] / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, state, hp, t):
    return ref_adam(p, g, state, hp, t, decoupled=True)


def ref_rmsprop(p, g, state, hp, t):
    lr, alpha, eps = hp["lr"], hp.get("alpha", 0.99), hp.get("eps", 1e-8)
    mu, wd = hp.get("momentum", 0.0), hp.get("weight_decay", 0.0)
    if wd:
        g = g + wd * p
    state["v"] = alpha * state.get("v", 0.0) + (1 - alpha) * g * g
    v = state["v"]
    if hp.get("centered"):
        state["g_ave"] = alpha * state.get("g_ave", 0.0) + (1 - alpha) * g
        v = v - state["g_ave"] ** 2
    if mu:
        state["b"] = mu * state.get("b", 0.0) + g / (np.sqrt(v) + eps)
        return p - lr * state["b"]
    return p - lr * g / (np.sqrt(v) + eps)


REFERENCE = {"sgd": ref_sgd, "adam": ref_adam, "adamw": ref_adamw, "rmsprop": ref_rmsprop}


def reference_trajectory(optimizer: dict, params, grads_seq) -> list[dict[str, np.ndarray]]:
    rule = REFERENCE[optimizer["type"]]
    params = {n: p.copy() for n, p in params.items()}
    states = {n: {} for n in params}
    out = []
    for t, grads in enumerate(grads_seq, start=1):
        grads = clip(grads, optimizer)
        params = {n: rule(params[n], grads[n], states[n], optimizer, t) for n in params}
        out.append(params)
    return out


CASES = {
    "sgd": {"type": "sgd", "lr": 0.1},
    "sgd-momentum": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "sgd-dampening": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3},
    "sgd-nesterov": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "sgd-weight-decay": {"type": "sgd", "lr": 0.1, "weight_decay": 0.05},
    "sgd-everything": {"type": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
    "adam": {"type": "adam", "lr": 0.01},
    "adam-betas-eps": {"type": "adam", "lr": 0.02, "betas": [0.8, 0.9], "eps": 1e-3},
    "adam-weight-decay": {"type": "adam", "lr": 0.01, "weight_decay": 0.1},
    "adamw": {"type": "adamw", "lr": 0.01},
    "adamw-weight-decay": {"type": "adamw", "lr": 0.05, "weight_decay": 0.5},
    "rmsprop": {"type": "rmsprop", "lr": 0.01},
    "rmsprop-alpha-eps": {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-4},
    "rmsprop-momentum": {"type": "rmsprop", "lr": 0.01, "momentum": 0.9},
    "rmsprop-centered": {"type": "rmsprop", "lr": 0.01, "centered": True},
    "rmsprop-centered-momentum-wd": {"type": "rmsprop", "lr": 0.01, "centered": True, "momentum": 0.5,
                                     "weight_decay": 0.1},
    "sgd-clip-norm": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "clip_grad_norm": 0.5},
    "adam-clip-norm": {"type": "adam", "lr": 0.01, "clip_grad_norm": 1.0},
    "sgd-clip-value": {"type": "sgd", "lr": 0.1, "clip_grad_value": 0.3},
    "rmsprop-clip-value": {"type": "rmsprop", "lr": 0.01, "clip_grad_value": 0.2},
}


@pytest.mark.parametrize("name", list(CASES))
def test_update_rule_matches_torch_reference(name):
    optimizer = CASES[name]
    params, grads_seq = initial_parameters(), gradient_sequence()
    engine = engine_trajectory(optimizer, params, grads_seq)
    reference = reference_trajectory(optimizer, params, grads_seq)
    for t, (got, want) in enumerate(zip(engine, reference), start=1):
        for n in SHAPES:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-14, err_msg=f"{name} step {t} {n}")
    # Each step moves the parameters: a rule that did nothing could not pass above, but make it plain.
    assert not np.array_equal(engine[-1]["0.weight"], params["0.weight"])


@pytest.mark.parametrize("name", ["sgd-everything", "sgd-dampening", "adam-weight-decay", "adamw-weight-decay",
                                  "rmsprop-centered-momentum-wd", "sgd-clip-norm", "rmsprop-clip-value"])
def test_update_rule_on_a_big_parameter_matches_torch_reference(name):
    optimizer = CASES[name]
    params = initial_parameters(shapes=BIG_SHAPES)
    grads_seq = gradient_sequence(shapes=BIG_SHAPES, scale=0.01)  # total norm ~5: clip_grad_norm 0.5/1.0 bites
    engine = engine_trajectory(optimizer, params, grads_seq, layers=BIG_LAYERS)
    reference = reference_trajectory(optimizer, params, grads_seq)
    for t, (got, want) in enumerate(zip(engine, reference), start=1):
        for n in BIG_SHAPES:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-11, atol=1e-13, err_msg=f"{name} step {t} {n}")


def test_the_reference_itself_on_one_number():
    # Hand-computed: adam's first step moves each coordinate by lr * sign(g) (up to eps).
    state = {}
    p = ref_adam(np.array([1.0]), np.array([-3.0]), state, {"lr": 0.1}, 1)
    np.testing.assert_allclose(p, [1.1], rtol=1e-7)
    # sgd with momentum 0.9: b1 = g, b2 = 0.9 g + g; p = 1 - 0.1 (1 + 1.9) = 0.71 for g = 1.
    state, p = {}, np.array([1.0])
    for t in (1, 2):
        p = ref_sgd(p, np.array([1.0]), state, {"lr": 0.1, "momentum": 0.9}, t)
    np.testing.assert_allclose(p, [0.71])


def test_clip_grad_norm_rescales_to_the_max_norm():
    model = make_model({"type": "sgd", "lr": 1.0, "clip_grad_norm": 1.0})
    params, grads = initial_parameters(), gradient_sequence(scale=10.0)[0]
    model.set_parameters(params)
    give_gradients(model, grads)
    model.step()
    update = {n: params[n] - model.parameters()[n] for n in SHAPES}  # lr 1: update == clipped gradient
    total = math.sqrt(sum(float((u * u).sum()) for u in update.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    for n in SHAPES:
        np.testing.assert_allclose(update[n], grads[n] / norm, rtol=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    model = make_model({"type": "sgd", "lr": 1.0, "clip_grad_norm": 1e6})
    params, grads = initial_parameters(), gradient_sequence()[0]
    model.set_parameters(params)
    give_gradients(model, grads)
    model.step()
    for n in SHAPES:
        np.testing.assert_allclose(params[n] - model.parameters()[n], grads[n], rtol=1e-12)


def test_clip_grad_value_clamps_each_entry():
    model = make_model({"type": "sgd", "lr": 1.0, "clip_grad_value": 0.25})
    params, grads = initial_parameters(), gradient_sequence()[0]
    model.set_parameters(params)
    give_gradients(model, grads)
    model.step()
    for n in SHAPES:
        update = params[n] - model.parameters()[n]
        assert np.abs(update).max() <= 0.25 + 1e-12
        np.testing.assert_allclose(update, np.minimum(np.maximum(grads[n], -0.25), 0.25), rtol=1e-12)


def test_step_uses_gradients_from_backward():
    # mse on a single linear layer: dL/dW = 2/(N M) (y - t)^T x, dL/db = 2/(N M) sum(y - t).
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": 3, "out_features": 2}],
                             "loss": {"type": "mse"}, "optimizer": {"type": "sgd", "lr": 0.5}, "dtype": "float64"})
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((2, 3)), rng.standard_normal(2)
    model.set_parameters({"0.weight": w, "0.bias": b})
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    model.forward_backward(x, t)
    model.step()
    diff = x @ w.T + b - t
    np.testing.assert_allclose(model.parameters()["0.weight"], w - 0.5 * 2 / 10 * diff.T @ x, rtol=1e-12)
    np.testing.assert_allclose(model.parameters()["0.bias"], b - 0.5 * 2 / 10 * diff.sum(0), rtol=1e-12)


def test_step_lr_override_is_the_rate_used():
    params, grads = initial_parameters(), gradient_sequence()[0]
    model = make_model({"type": "sgd", "lr": 0.1})
    model.set_parameters(params)
    give_gradients(model, grads)
    result = model.step(lr=0.25)
    assert result.lr == 0.25
    for n in SHAPES:
        np.testing.assert_allclose(model.parameters()[n], params[n] - 0.25 * grads[n], rtol=1e-12)


def test_step_lr_override_stays_for_later_steps():
    # As setting param_group["lr"] in torch: a schedule sets it, later steps keep it (and checkpoints record it).
    params, grads_seq = initial_parameters(), gradient_sequence()
    model = make_model({"type": "sgd", "lr": 0.1})
    model.set_parameters(params)
    give_gradients(model, grads_seq[0])
    model.step(lr=0.25)
    give_gradients(model, grads_seq[1])
    assert model.step().lr == 0.25
    for n in SHAPES:
        np.testing.assert_allclose(model.parameters()[n], params[n] - 0.25 * (grads_seq[0][n] + grads_seq[1][n]),
                                   rtol=1e-12)
    assert Model.from_bytes(model.to_bytes()).optimizer.lr == 0.25


def test_step_lr_override_must_be_valid():
    model = make_model({"type": "sgd", "lr": 0.1})
    give_gradients(model, gradient_sequence()[0])
    before = {n: p.copy() for n, p in model.parameters().items()}
    with pytest.raises(InputError) as info:
        model.step(lr=-1.0)
    assert info.value.errors[0]["loc"] == ["lr"]
    for n in SHAPES:
        assert np.array_equal(model.parameters()[n], before[n])


@pytest.mark.parametrize("optimizer, loc", [
    ({"type": "sgd", "lr": -0.1}, ["optimizer", "lr"]),
    ({"type": "adam", "lr": -1e-3}, ["optimizer", "lr"]),
    ({"type": "adam", "betas": [0.9, 1.0]}, ["optimizer", "betas"]),
    ({"type": "adam", "betas": [-0.1, 0.999]}, ["optimizer", "betas"]),
    ({"type": "adamw", "betas": [0.9]}, ["optimizer", "betas"]),
    ({"type": "adam", "eps": 0.0}, ["optimizer", "eps"]),
    ({"type": "sgd", "lr": 0.1, "nesterov": True}, ["optimizer", "nesterov"]),
    ({"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.5, "nesterov": True}, ["optimizer", "nesterov"]),
    ({"type": "sgd", "lr": 0.1, "momentum": -0.5}, ["optimizer", "momentum"]),
    ({"type": "sgd", "lr": 0.1, "weight_decay": -1.0}, ["optimizer", "weight_decay"]),
    ({"type": "rmsprop", "alpha": -0.5}, ["optimizer", "alpha"]),
    ({"type": "sgd", "lr": 0.1, "clip_grad_norm": 0.0}, ["optimizer", "clip_grad_norm"]),
    ({"type": "sgd", "lr": 0.1, "clip_grad_value": -1.0}, ["optimizer", "clip_grad_value"]),
    ({"type": "sgd", "lr": float("nan")}, ["optimizer", "lr"]),
    ({"type": "sgd", "lr": "fast"}, ["optimizer", "lr"]),
])
def test_invalid_hyperparameters_are_spec_errors_naming_the_option(optimizer, loc):
    with pytest.raises(SpecError) as info:
        make_model(optimizer)
    assert {tuple(e["loc"]) for e in info.value.errors} == {tuple(loc)}


def test_an_invalid_alpha_is_reported_once():
    with pytest.raises(SpecError) as info:
        make_model({"type": "rmsprop", "alpha": -0.5})
    assert len(info.value.errors) == 1


def test_step_without_gradients_is_refused():
    model = make_model({"type": "adam"})
    with pytest.raises(NothingToStepError):
        model.step()
    give_gradients(model, gradient_sequence()[0])
    model.step()
    with pytest.raises(NothingToStepError):  # the step cleared them
        model.step()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("optimizer", [{"type": "adam"}, {"type": "sgd", "lr": 0.1, "momentum": 0.9}])
def test_non_finite_gradients_are_refused_and_leave_parameters_untouched(bad, optimizer):
    model = make_model(optimizer, dtype="float32")
    give_gradients(model, gradient_sequence()[0])
    model.step()  # some optimizer state exists now
    before = {n: p.copy() for n, p in model.parameters().items()}
    state_before = {n: {k: v.copy() for k, v in s.items()} for n, s in model.optimizer.state.items()}
    step, version = model.step_count, model.version
    grads = gradient_sequence(seed=5)[0]
    grads["2.weight"][1, 2] = bad
    give_gradients(model, grads)
    with pytest.raises(NonFiniteGradientError, match="2.weight"):
        model.step()
    for n in SHAPES:
        assert model.parameters()[n].tobytes() == before[n].tobytes()
        assert not model.gradients()[n].any()
        for k, v in state_before[n].items():
            assert np.array_equal(model.optimizer.state[n][k], v)
    assert (model.step_count, model.version, model.accumulated) == (step, version, 0)
    with pytest.raises(NothingToStepError):
        model.step()


def test_large_finite_float32_gradients_are_not_called_non_finite():
    model = make_model({"type": "sgd", "lr": 1e-20, "clip_grad_norm": 1.0}, dtype="float32")
    grads = {n: np.zeros(s) for n, s in SHAPES.items()}
    grads["0.weight"][0, 0] = 1e20  # finite in float32 (max 3.4e38)
    give_gradients(model, grads)
    before = model.parameters()["0.weight"][0, 0]
    model.step()
    assert model.parameters()["0.weight"][0, 0] == pytest.approx(before - 1e-20, abs=1e-6)


def test_non_finite_gradient_in_a_late_chunk_of_a_big_parameter_is_refused():
    model = make_model({"type": "adam"}, dtype="float32", layers=BIG_LAYERS)
    grads = gradient_sequence(shapes=BIG_SHAPES)[0]
    grads["0.weight"][-1, -1] = np.inf  # the last chunk: nothing before it may have been updated
    give_gradients(model, grads)
    before = {n: p.copy() for n, p in model.parameters().items()}
    with pytest.raises(NonFiniteGradientError):
        model.step()
    for n in BIG_SHAPES:
        assert model.parameters()[n].tobytes() == before[n].tobytes()
    assert all(not s.get("exp_avg", np.zeros(1)).any() for s in model.optimizer.state.values())


def test_a_refused_step_does_not_change_the_learning_rate():
    model = make_model({"type": "sgd", "lr": 0.1})
    grads = gradient_sequence()[0]
    grads["0.bias"][0] = np.nan
    give_gradients(model, grads)
    with pytest.raises(NonFiniteGradientError):
        model.step(lr=5.0)
    assert model.optimizer.lr == 0.1 and model.spec["optimizer"]["lr"] == 0.1


def snapshot(model: Model) -> tuple:
    """Everything a refused step must leave as it was: parameters, optimizer state, counters, lr."""
    params = {n: p.tobytes() for n, p in model.parameters().items()}
    state = {n: {k: v.tobytes() for k, v in s.items()} for n, s in model.optimizer.state.items()}
    return params, state, model.step_count, model.version, model.optimizer.lr, model.spec["optimizer"]["lr"]


OPTIMIZERS = [{"type": "sgd"}, {"type": "sgd", "momentum": 0.9, "nesterov": True}, {"type": "adam"},
              {"type": "adamw"}, {"type": "rmsprop", "momentum": 0.5, "centered": True}]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("layers, shapes", [(LAYERS, SHAPES), (BIG_LAYERS, BIG_SHAPES)], ids=["small", "chunked"])
def test_an_update_that_would_overflow_is_refused_and_changes_nothing(optimizer, layers, shapes):
    model = make_model(optimizer, dtype="float32", layers=layers)
    give_gradients(model, gradient_sequence(shapes=shapes)[0])
    model.step()  # some optimizer state exists now
    before = snapshot(model)
    give_gradients(model, gradient_sequence(seed=5, shapes=shapes)[0])
    with pytest.raises(NonFiniteUpdateError, match="non-finite values in"):
        model.step(lr=1e300)  # a finite Python float, but no float32 update survives it
    assert snapshot(model) == before
    assert model.accumulated == 0 and not any(g.any() for g in model.gradients().values())
    give_gradients(model, gradient_sequence(seed=5, shapes=shapes)[0])
    model.step()  # the model trains on at its old learning rate
    assert model.step_count == before[2] + 1 and model.optimizer.lr == before[4]


def test_a_refused_first_step_leaves_no_optimizer_state():
    model = make_model({"type": "adam"}, dtype="float32")
    give_gradients(model, gradient_sequence()[0])
    with pytest.raises(NonFiniteUpdateError):
        model.step(lr=1e300)
    assert all(not state for state in model.optimizer.state.values())
    Model.from_bytes(model.to_bytes())  # and its checkpoint still loads


def test_a_parameter_near_the_float32_limit_is_checked_exactly():
    model = make_model({"type": "sgd", "lr": 1.0}, dtype="float32")
    big = np.finfo(np.float32).max
    params = {n: np.zeros(s, np.float32) for n, s in SHAPES.items()}
    params["0.weight"][0, 0] = big
    model.set_parameters(params)
    grads = {n: np.zeros(s) for n, s in SHAPES.items()}
    grads["0.weight"][1, 1] = -big  # far from the big entry: p + u stays finite everywhere
    give_gradients(model, grads)
    model.step()
    assert model.parameters()["0.weight"][1, 1] == big
    grads["0.weight"][1, 1], grads["0.weight"][0, 0] = 0.0, -big  # now 3.4e38 + 3.4e38 overflows
    give_gradients(model, grads)
    with pytest.raises(NonFiniteUpdateError, match="0.weight"):
        model.step()
    assert model.parameters()["0.weight"][0, 0] == big


def test_adamw_decay_that_overflows_is_refused():
    model = make_model({"type": "adamw", "lr": 1e300, "weight_decay": 0.01}, dtype="float32")
    give_gradients(model, {n: np.zeros(s) for n, s in SHAPES.items()})  # zero gradients: only the decay moves
    before = snapshot(model)
    with pytest.raises(NonFiniteUpdateError):
        model.step()
    assert snapshot(model) == before


def test_a_gradient_whose_square_overflows_adam_state_is_refused():
    model = make_model({"type": "adam"}, dtype="float32")
    give_gradients(model, gradient_sequence()[0])
    model.step()
    before = snapshot(model)
    grads = {n: np.zeros(s) for n, s in SHAPES.items()}
    grads["0.weight"][0, 0] = 1e20  # finite in float32, its square is not: exp_avg_sq would be Inf
    give_gradients(model, grads)
    with pytest.raises(NonFiniteUpdateError, match="optimizer state"):
        model.step()
    assert snapshot(model) == before


def test_a_refused_train_step_leaves_running_statistics_and_dropout_stream_as_they_were():
    layers = [{"type": "linear", "in_features": 3, "out_features": 4}, {"type": "batchnorm"},
              {"type": "dropout", "p": 0.5}, {"type": "linear", "out_features": 2}]
    model = make_model({"type": "sgd", "lr": 0.1}, dtype="float32", layers=layers)
    x, y = np.random.default_rng(0).standard_normal((8, 3)), np.zeros((8, 2))
    model.train_step(x, y)
    buffers = {n: b.copy() for n, b in model.buffers().items()}
    rng_state, before = model.rng.bit_generator.state, snapshot(model)
    with pytest.raises(NonFiniteUpdateError):
        model.train_step(x, y, lr=1e300)
    assert snapshot(model) == before and model.rng.bit_generator.state == rng_state
    assert all(np.array_equal(model.buffers()[n], b) for n, b in buffers.items())


@pytest.mark.parametrize("optimizer", [
    {"type": "sgd", "lr": 0.1, "weight_decay": 0.01}, {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    {"type": "adam", "weight_decay": 0.01, "clip_grad_norm": 1.0}, {"type": "adamw"},
    {"type": "rmsprop", "clip_grad_value": 0.5}, {"type": "rmsprop", "centered": True, "momentum": 0.5},
], ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("layers, shapes", [(LAYERS, SHAPES), (BIG_LAYERS, BIG_SHAPES)], ids=["small", "chunked"])
def test_the_one_pass_step_and_the_careful_step_give_the_same_bits(optimizer, layers, shapes):
    fast, careful = (make_model(optimizer, dtype="float32", layers=layers) for _ in range(2))
    for grads in gradient_sequence(shapes=shapes):
        for model, mode in ((fast, None), (careful, True)):
            give_gradients(model, grads)
            model.optimizer.step(careful=mode)
            model.zero_grad()
    assert snapshot(fast) == snapshot(careful)


def test_the_one_pass_step_is_taken_only_where_a_bound_proves_it_finite():
    adam = make_model({"type": "adam"}, dtype="float32")
    give_gradients(adam, gradient_sequence()[0])
    assert adam.optimizer._surely_finite({n: 1.0 for n in SHAPES}, 1.0, float(np.finfo(np.float32).max),
                                         {n: 1 for n in SHAPES})
    adam.optimizer.lr = 1e35  # no bound: the careful step, which then refuses it
    assert not adam.optimizer._surely_finite({n: 1.0 for n in SHAPES}, 1.0, float(np.finfo(np.float32).max),
                                             {n: 1 for n in SHAPES})
    momentum = make_model({"type": "sgd", "momentum": 0.9}, dtype="float32")
    assert not momentum.optimizer._surely_finite({n: 1.0 for n in SHAPES}, 1.0, float(np.finfo(np.float32).max),
                                                 {n: 1 for n in SHAPES})
