"""The HTTP service in-process (TestClient): every endpoint, multipart and base64 JSON, 413 / 415 / 422, a
decompression bomb, errors without tracebacks, inference off the event loop, gallery edits persisted."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from siamkit.index import Gallery
from siamkit.index.ops import build
from siamkit.runs import load
from siamkit.runs.embedders import TorchEmbedder
from siamkit.serve.app import create_app
from siamkit.serve.uploads import UploadLimits


def _png(path) -> bytes:
    return path.read_bytes()


def _crafted_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def gallery_dir(small_run, digits_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_gallery") / "g"
    build(str(small_run), [str(digits_images)], str(out))
    return out


@pytest.fixture
def client(small_run, gallery_dir, tmp_path):
    import shutil

    g = tmp_path / "g"
    shutil.copytree(gallery_dir, g)  # each test edits its own copy
    app = create_app(TorchEmbedder(small_run), Gallery.open(g), limits=UploadLimits(max_request_bytes=200_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.gallery_dir = g
        yield c


def _files(digits_images, *names):
    return [digits_images / n for n in names]


def test_health_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["backend"] == "torch" and h["gallery"]["size"] == 200
    assert "run_dir" not in h and len(h["model_hash"]) == 64
    spec = client.get("/openapi.json").json()
    for path in ("/embed", "/verify", "/search", "/gallery", "/gallery/{item_id}", "/health"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/verify"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="verify-btn"' in page.text and "Content-Security-Policy" in page.headers


def test_verify_multipart_and_json_agree_with_the_library(client, small_run, digits_images):
    a, b, c = _files(digits_images, "0/000.png", "0/010.png", "1/001.png")
    r = client.post("/verify", files={"image_a": a.read_bytes(), "image_b": b.read_bytes()})
    assert r.status_code == 200, r.text
    same = r.json()
    want = load(small_run).verify(str(a), str(b)).to_dict()
    assert same["distance"] == pytest.approx(want["distance"], abs=1e-6)
    assert same["threshold"] == pytest.approx(want["threshold"]) and same["same"] == want["same"]
    body = {"image_a": base64.b64encode(a.read_bytes()).decode(),
            "image_b": "data:image/png;base64," + base64.b64encode(c.read_bytes()).decode()}  # fmt: skip
    diff = client.post("/verify", json=body).json()
    assert diff["distance"] > same["distance"]
    assert diff["distance"] == pytest.approx(load(small_run).verify(str(a), str(c)).to_dict()["distance"], abs=1e-6)


def test_embed_one_and_many(client, small_run, digits_images):
    a, b = _files(digits_images, "2/002.png", "3/003.png")
    r = client.post("/embed", files=[("image", a.read_bytes()), ("image", b.read_bytes())]).json()
    want = TorchEmbedder(small_run).embed_files([str(a), str(b)])
    assert r["dim"] == want.shape[1] and np.allclose(r["embeddings"], want, atol=1e-6)
    r = client.post("/embed", json={"image": base64.b64encode(a.read_bytes()).decode()}).json()
    assert np.allclose(r["embeddings"][0], want[0], atol=1e-6)


def test_search_add_delete(client, digits_images):
    q = digits_images / "7" / "007.png"
    r = client.post("/search", files={"image": q.read_bytes()}, data={"k": "5"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 5 and res[0]["distance"] < 1e-3 and res[0]["label"] == "7"
    assert all("path" not in h for h in res)  # server paths stay on the server
    assert [h["rank"] for h in res] == [1, 2, 3, 4, 5]
    assert client.get(res[0]["image_url"]).headers["content-type"] == "image/png"
    assert client.post("/search?k=3", files={"image": q.read_bytes()}).json()["k"] == 3

    added = client.post("/gallery", files={"image": q.read_bytes()}, data={"label": "new"})
    assert added.status_code == 201 and added.json() == {"id": 200, "label": "new", "size": 201}
    assert (client.gallery_dir / "uploads" / "200.png").is_file()
    top2 = client.post("/search", files={"image": q.read_bytes()}, data={"k": "2"}).json()["results"]
    assert {h["id"] for h in top2} == {200, res[0]["id"]}
    img = Image.open(io.BytesIO(client.get("/gallery/200/image").content))
    assert img.size == (8, 8)
    assert Gallery.open(client.gallery_dir).items[200].label == "new"  # committed to disk

    assert client.delete("/gallery/200").json() == {"removed": 200, "size": 200}
    assert not (client.gallery_dir / "uploads" / "200.png").exists()
    assert 200 not in Gallery.open(client.gallery_dir).items
    assert client.delete("/gallery/200").status_code == 404
    assert client.get("/gallery/200/image").status_code == 404
    listing = client.get("/gallery", params={"limit": 3}).json()
    assert listing["size"] == 200 and [it["id"] for it in listing["items"]] == [0, 1, 2]


def test_refusals_are_one_detail_line(client, digits_images):
    png = (digits_images / "0" / "000.png").read_bytes()
    cases = [
        (client.post("/verify", files={"image_a": png}), 422, "missing image field 'image_b'"),
        (client.post("/verify", files={"image_a": b"hello", "image_b": png}), 415, "not an image in an accepted"),
        (client.post("/verify", files={"image_a": png[:60], "image_b": png}), 422, "corrupt"),
        (client.post("/verify", content=b"x", headers={"content-type": "text/plain"}), 415, "multipart/form-data"),
        (client.post("/verify", json={"image_a": "/etc/passwd", "image_b": "http://x/y.png"}), 422, "invalid base64"),
        (client.post("/search", files={"image": png}, data={"k": "0"}), 422, "k must be between 1 and 100"),
        (client.post("/search", files={"image": png}, data={"k": "ten"}), 422, "k must be an integer"),
        (client.post("/verify", content=b"{", headers={"content-type": "application/json"}), 422, "not valid JSON"),
    ]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="ICO")  # a real image, not an accepted format
    cases.append((client.post("/embed", files={"image": buf.getvalue()}), 415, "accepted format"))
    for response, status, text in cases:
        assert response.status_code == status, (response.status_code, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and text in detail and "Traceback" not in detail


def test_request_size_limit_413(client, digits_images):
    big = b"\x00" * 250_000
    r = client.post("/embed", files={"image": big})
    assert r.status_code == 413 and "200,000-byte limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(30):
            yield b"a" * 10_000

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_decompression_bombs_422(client, digits_images):
    big = io.BytesIO()
    Image.new("L", (6000, 5000)).save(big, format="PNG")  # 30 M pixels in ~30 kB, over the 25 M limit
    assert len(big.getvalue()) < 200_000
    r = client.post("/embed", files={"image": big.getvalue()})
    assert r.status_code == 422 and "decompression-bomb guard" in r.json()["detail"]
    r = client.post("/embed", files={"image": _crafted_png(40000, 40000)})  # Pillow's own guard fires first
    assert r.status_code == 422 and "decompression-bomb guard" in r.json()["detail"]


def test_internal_errors_hide_the_traceback(client, digits_images, monkeypatch):
    svc = client.app.state.service

    def boom(images):
        raise RuntimeError("secret internals /srv/model")

    monkeypatch.setattr(svc.model.embedder, "embed", boom)
    r = client.post("/embed", files={"image": (digits_images / "0" / "000.png").read_bytes()})
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}


def test_inference_runs_off_the_event_loop(client, digits_images, monkeypatch):
    svc = client.app.state.service
    seen = []
    real = svc.model.embedder.embed

    def spy(images):
        try:
            asyncio.get_running_loop()
            seen.append("on the loop")
        except RuntimeError:
            seen.append("worker thread")
        return real(images)

    monkeypatch.setattr(svc.model.embedder, "embed", spy)
    png = (digits_images / "0" / "000.png").read_bytes()
    assert client.post("/verify", files={"image_a": png, "image_b": png}).status_code == 200
    assert seen == ["worker thread"]


def test_without_a_gallery_search_is_409(small_run, digits_images):
    with TestClient(create_app(TorchEmbedder(small_run))) as c:
        png = (digits_images / "0" / "000.png").read_bytes()
        r = c.post("/search", files={"image": png})
        assert r.status_code == 409 and "--gallery" in r.json()["detail"]
        assert c.get("/health").json()["gallery"] is None
        assert c.post("/verify", files={"image_a": png, "image_b": png}).status_code == 200


def test_a_gallery_of_another_model_is_refused_at_start(small_run, gallery_dir, tmp_path):
    from siamkit.errors import CheckpointError

    g = Gallery.open(gallery_dir)
    g.meta["model_hash"] = "f" * 64
    with pytest.raises(CheckpointError, match="built with model ffffffffffff"):
        create_app(TorchEmbedder(small_run), g)


def test_uploads_are_stored_as_bounded_png_copies(client):
    big = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 600, 3), dtype=np.uint8)).save(big, format="JPEG")
    r = client.post("/gallery", files={"image": big.getvalue()}, data={"label": "wide"})
    assert r.status_code == 201, r.text
    stored = Image.open(client.gallery_dir / "uploads" / f"{r.json()['id']}.png")
    assert stored.format == "PNG" and stored.size == (512, 256) and stored.mode == "L"  # the model's mode
    thumb = Image.open(io.BytesIO(client.get(f"/gallery/{r.json()['id']}/image").content))
    assert max(thumb.size) == 256


def test_the_service_follows_edits_committed_by_another_process(client, small_run, digits_images, tmp_path):
    from siamkit.index.ops import add, remove

    q = digits_images / "9" / "009.png"
    before = client.post("/search", files={"image": q.read_bytes()}, data={"k": "1"}).json()["results"][0]
    assert before["match"] is True  # the query itself, within the threshold
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "nine.png").write_bytes(q.read_bytes())
    add(str(client.gallery_dir), [str(extra)], label="cli-added")  # as `siamkit index add` would, beside the service
    assert client.get("/health").json()["gallery"]["size"] == 201
    top = client.post("/search", files={"image": q.read_bytes()}, data={"k": "2"}).json()["results"]
    assert {h["label"] for h in top} == {"9", "cli-added"}
    remove(str(client.gallery_dir), [200])
    assert client.get("/health").json()["gallery"]["size"] == 200
    # and the service's own edits go on from the reloaded state: the next id is 201, not 200 again
    r = client.post("/gallery", files={"image": q.read_bytes()})
    assert r.json()["id"] == 201


def test_serving_imports_nothing_of_training(small_run):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import siamkit\n"
        "from siamkit.serve.app import create_app\n"
        f"m = siamkit.load({str(small_run)!r})\n"
        "m.verify(*[__import__('numpy').zeros((8, 8), 'uint8')] * 2)\n"
        "create_app(m)\n"
        "heavy = ('matplotlib', 'sklearn', 'siamkit.training', 'siamkit.studies', 'siamkit.evaluate.plots',\n"
        "         'siamkit.classify')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip() == "[]"
