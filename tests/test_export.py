"""ONNX export: parity with PyTorch (≤ 1e-4) at several batch sizes, metadata, ONNX Runtime as a backend for
verify, galleries and the service; refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from siamkit.cli import main
from siamkit.errors import CheckpointError
from siamkit.runs.embedders import OnnxEmbedder, TorchEmbedder
from siamkit.runs.export import export_onnx


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("onnx") / "run"
    shutil.copytree(small_run, run)
    code = main(["export", str(run), "--to", "onnx", "-q"])
    assert code == 0
    return run


def test_onnx_matches_pytorch_at_any_batch_size(exported):
    onnx_model, torch_model = OnnxEmbedder(exported / "model.onnx"), TorchEmbedder(exported)
    assert onnx_model.model_hash == torch_model.model_hash
    assert onnx_model.threshold == pytest.approx(torch_model.threshold)
    assert onnx_model.input_shape == torch_model.input_shape and onnx_model.distance == torch_model.distance
    gen = torch.Generator().manual_seed(3)
    for n in (1, 5, 300):  # 300 > the embedder's batch: two calls of different sizes
        x = torch.randint(0, 256, (n, *torch_model.input_shape), generator=gen, dtype=torch.uint8)
        diff = np.abs(onnx_model.embed(x) - torch_model.embed(x)).max()
        assert diff <= 1e-4, (n, diff)
    inp = onnx_model.session.get_inputs()[0]
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == list(torch_model.input_shape)  # dynamic batch


def test_export_reports_its_parity(small_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    r = export_onnx(small_run, out)
    assert out.is_file() and r["bytes"] == out.stat().st_size and r["max_abs_diff"] <= 1e-4
    assert r["input"][0] == "batch"
    assert main(["export", str(small_run), "--out", str(tmp_path / "n.onnx")]) == 0
    assert "parity with PyTorch: max |difference|" in capsys.readouterr().out
    # an ONNX file kept elsewhere is named with --onnx
    png = str(small_run / "roc.png")  # any image: compared with itself
    code = main(["verify", str(small_run), png, png, "--backend", "onnx", "--onnx", str(out), "--format", "json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["distance"] < 1e-3


def test_export_refuses_a_parity_failure_and_writes_nothing(small_run, tmp_path, monkeypatch):
    import siamkit.runs.export as ex

    monkeypatch.setattr(ex, "parity", lambda *a, **k: 0.5)
    with pytest.raises(CheckpointError, match="differs from PyTorch by 0.5"):
        export_onnx(small_run, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_backend_for_verify_gallery_and_service(exported, digits_images, tmp_path, capsys):
    a, b = digits_images / "0" / "000.png", digits_images / "1" / "001.png"
    for backend in ("torch", "onnx"):
        assert main(["verify", str(exported), str(a), str(b), "--backend", backend, "--format", "json"]) == 0
    t, o = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert o["distance"] == pytest.approx(t["distance"], abs=1e-4) and o["same"] == t["same"]

    gdir = tmp_path / "g"
    assert main(["index", "build", str(exported), str(digits_images / "0"), "--out", str(gdir), "-q"]) == 0
    capsys.readouterr()
    assert main(["search", str(gdir), str(a), "-k", "1", "--backend", "onnx", "--format", "json"]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]["neighbours"][0]
    assert hit["path"] == str(a) and hit["distance"] < 1e-3  # a torch-built gallery searched on ONNX Runtime

    from siamkit.index import Gallery
    from siamkit.serve.app import create_app

    with TestClient(create_app(OnnxEmbedder(exported / "model.onnx"), Gallery.open(gdir))) as c:
        assert c.get("/health").json()["backend"] == "onnx"
        r = c.post("/verify", files={"image_a": a.read_bytes(), "image_b": b.read_bytes()}).json()
        assert r["distance"] == pytest.approx(t["distance"], abs=1e-4)


def test_missing_onnx_file_is_one_line(small_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "model.onnx").unlink(missing_ok=True)
    code = main(["verify", str(run), "a.png", "b.png", "--backend", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and "siamkit export RUN_DIR" in err and err.count("\n") == 1
    (run / "model.onnx").write_bytes(b"not onnx")
    assert main(["verify", str(run), "a.png", "b.png", "--backend", "onnx"]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "backbone,shape,extra",
    [("seed_cnn", (1, 28, 28), []), ("basecnn", (3, 32, 32), ["model.backbone_args={blocks: Ddw}"]),
     ("resnet18", (3, 64, 64), []), ("efficientnet_b0", (3, 64, 64), []), ("timm/resnet10t", (3, 64, 64), [])],
)  # fmt: skip
def test_every_backbone_family_exports_with_parity(backbone, shape, extra, tmp_path):
    """Untrained weights written as a run directory; the export must match PyTorch and the embeddings must vary
    with the input (a constant graph would match trivially)."""
    from siamkit.config import load_config, to_dict
    from siamkit.models.siamese import build_model
    from siamkit.rundir import weights_metadata
    from siamkit.training.checkpoint import save_weights

    c = shape[0]
    cfg = load_config(None, [f"model.backbone={backbone}", f"data.mean={[0.5] * c}", f"data.std={[0.25] * c}", *extra])
    torch.manual_seed(0)
    model = build_model(cfg.model, c)
    for m in model.modules():  # calibrate BatchNorm on random inputs: untrained statistics can flatten the output
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, *shape), mode="embed")
    save_weights(model.eval(), tmp_path / "model.safetensors", weights_metadata(to_dict(cfg), shape, 0.5))
    r = export_onnx(tmp_path)
    assert r["max_abs_diff"] <= 1e-4
    x = torch.randint(0, 256, (4, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    got = OnnxEmbedder(tmp_path / "model.onnx").embed(x)
    assert np.abs(got - TorchEmbedder(tmp_path).embed(x)).max() <= 1e-4
    assert np.ptp(got, axis=0).max() > 1e-3
