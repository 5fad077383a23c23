"""GET /v1/models/{id}/export?format=onnx: the trained model as an ONNX file onnxruntime runs."""

import sys

import numpy as np

from wire import array, create, tensor
from tests.optional import need

ort = need("onnxruntime")

# Batchnorm's running statistics and dropout make eval differ from training: the export is eval.
SPEC = {
    "layers": [{"type": "linear", "in_features": 4, "out_features": 8}, {"type": "batchnorm"}, {"type": "gelu"},
               {"type": "dropout", "p": 0.5}, {"type": "linear", "out_features": 3}],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "adam", "lr": 0.05},
}
RNG = np.random.default_rng(5)
X = RNG.standard_normal((6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])


def test_the_export_of_a_trained_model_runs_in_onnxruntime_as_forward(api):
    info = create(api, SPEC)
    url = f"/v1/models/{info['id']}"
    for _ in range(3):
        assert api.post(f"{url}/train_step", json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    exported = api.get(f"{url}/export?format=onnx")
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/octet-stream"
    assert exported.headers["content-disposition"] == f'attachment; filename="{info["id"]}.onnx"'
    session = ort.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    for batch in (X[:1], X):
        (outputs,) = session.run(["outputs"], {"inputs": batch})
        served = array(api.post(f"{url}/forward", json={"inputs": tensor(batch)}).json()["outputs"])
        np.testing.assert_allclose(outputs, served, rtol=1e-5, atol=1e-5)


def test_format_defaults_to_onnx_and_other_formats_are_422(api):
    info = create(api, SPEC)
    assert api.get(f"/v1/models/{info['id']}/export").status_code == 200
    response = api.get(f"/v1/models/{info['id']}/export?format=zip")
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["query", "format"]


def test_an_unknown_model_is_404(api):
    response = api.get("/v1/models/no-such-model/export?format=onnx")
    assert response.status_code == 404 and response.json()["code"] == "model_not_found"


def test_without_the_onnx_package_the_export_is_501_naming_the_extra(client, monkeypatch):
    info = create(client, SPEC)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    response = client.get(f"/v1/models/{info['id']}/export?format=onnx")
    assert response.status_code == 501 and response.json()["code"] == "export_unavailable"
    assert "pip install 'gradserve[onnx]'" in response.json()["detail"]
