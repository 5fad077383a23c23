"""Binary and list forms carry the same arrays, bit for bit, in both directions."""

import numpy as np
import pytest

import gradserve_client as gs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_and_list_forms_give_identical_arrays(server, dtype, blobs, classifier):
    x, y = blobs(16, seed=7)
    with gs.Client(server.url, binary=True) as binary, gs.Client(server.url, binary=False) as listed:
        model_b = binary.create_model(classifier, dtype=dtype)
        model_l = listed.model(model_b.id)

        out_b, out_l = model_b.forward(x), model_l.forward(x)
        assert out_b.dtype == out_l.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out_b, out_l)

        fb_b = model_b.forward_backward(x, y, return_outputs=True, return_input_grad=True)
        fb_l = model_l.forward_backward(x, y, return_outputs=True, return_input_grad=True)
        assert fb_b.loss == fb_l.loss
        np.testing.assert_array_equal(fb_b.outputs, fb_l.outputs)
        np.testing.assert_array_equal(fb_b.input_grad, fb_l.input_grad)

        grads_b, grads_l = model_b.gradients(), model_l.gradients()
        for name in grads_b:
            np.testing.assert_array_equal(grads_b[name], grads_l[name])

        parameters = {n: np.random.default_rng(0).normal(size=s).astype(dtype)
                      for n, s in model_b.info.parameter_shapes.items()}
        model_l.load_parameters(parameters)
        from_list = model_b.parameters()
        model_b.load_parameters(parameters)
        for name, value in model_l.parameters().items():
            np.testing.assert_array_equal(value, from_list[name])
            np.testing.assert_array_equal(value, parameters[name])


def test_a_body_sent_in_pieces_arrives_whole_from_both_clients(server):
    """A binary body over PIECE_BYTES goes as views of the arrays, piece by piece: the server
    reads the same arrays as from the list form, from the sync and the async client alike."""
    import asyncio

    from gradserve_client._codec import PIECE_BYTES

    spec = {"layers": [{"type": "linear", "in_features": 128, "out_features": 3}], "loss": {"type": "mse"},
            "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 0}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 128)).astype(np.float32)  # 1.5 MB: JSON text and two pieces
    y = rng.standard_normal((3000, 3)).astype(np.float32)
    assert x.nbytes > PIECE_BYTES
    with gs.Client(server.url, binary=True) as binary, gs.Client(server.url, binary=False) as listed:
        model_b = binary.create_model(spec)
        model_l = listed.model(model_b.id)
        expected = model_l.forward(x)
        np.testing.assert_array_equal(model_b.forward(x), expected)
        assert model_b.evaluate(x, y).loss == model_l.evaluate(x, y).loss

        async def forward_async():
            async with gs.AsyncClient(server.url, binary=True) as client:
                return await (await client.model(model_b.id)).forward(x)

        np.testing.assert_array_equal(asyncio.run(forward_async()), expected)


def test_small_integer_inputs_travel_as_floats_to_a_float_model_and_as_indices_to_an_embedding(server):
    """uint8 pixels go to a float model as FP32 in binary form (4 bytes, not INT64's 8), with the
    same results as sending them as floats; token ids stay INT64 for a model that embeds them."""
    import json

    from gradserve_client._codec import JSON_LENGTH_HEADER, encode_pieces

    spec = {"layers": [{"type": "linear", "in_features": 6, "out_features": 2}], "loss": {"type": "mse"},
            "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 0}
    pixels = np.random.default_rng(5).integers(0, 256, (4, 6)).astype(np.uint8)
    targets = np.zeros((4, 2), np.float32)
    with gs.Client(server.url, binary=True) as binary, gs.Client(server.url, binary=False) as listed:
        model = binary.create_model(spec)
        sent = model._inputs(pixels)
        assert sent.dtype == np.float32 and np.array_equal(sent, pixels)
        np.testing.assert_array_equal(model.forward(pixels), model.forward(pixels.astype(np.float32)))
        np.testing.assert_array_equal(model.forward(pixels), listed.model(model.id).forward(pixels))
        assert model.evaluate(pixels, targets).loss == model.evaluate(pixels.astype(np.float32), targets).loss

        embedding = binary.create_model({"layers": [{"type": "embedding", "num_embeddings": 256, "embedding_dim": 3},
                                                    {"type": "flatten"},
                                                    {"type": "linear", "in_features": 18, "out_features": 2}],
                                         "loss": {"type": "mse"}, "optimizer": {"type": "sgd", "lr": 0.1}})
        assert embedding._inputs(pixels).dtype == np.int64
        (body,), headers = encode_pieces({"inputs": embedding._inputs(pixels)}, binary=True)
        assert json.loads(body[:int(headers[JSON_LENGTH_HEADER])])["inputs"]["datatype"] == "INT64"
        assert embedding.forward(pixels).shape == (4, 2)
