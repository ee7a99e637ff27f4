"""Issue 30's HTTP cases, beside the bad-input corpus of ``tests/test_corpus.py`` (``test_http_corpus``) and held to
the same bar: every request is refused with its status and one line naming what is wrong, no traceback, no server
path, and nothing changes in the gallery. Cases: uploads below the 8-px minimum side or sliver-shaped (1×1,
1×5000, 5000×1, 7×7, 8×400; training refuses < 8 px too), megabyte and over-long labels (multipart and JSON, on
add and on search), text fields over the limit, malformed ``Host`` headers (``[::1]anything`` and kin)."""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 200).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def world(small_run, digits_images, tmp_path_factory):
    from siamkit.index.ops import build

    gallery = tmp_path_factory.mktemp("http_corpus2") / "gallery"
    build(str(small_run), [str(digits_images / "0"), str(digits_images / "1")], str(gallery))
    return {"run": small_run, "image": digits_images / "0" / "000.png", "gallery": gallery}


@pytest.fixture(scope="module")
def http(world, tmp_path_factory):
    from siamkit.index import Gallery
    from siamkit.runs.embedders import TorchEmbedder
    from siamkit.serve.app import create_app
    from siamkit.serve.guard import Guard, default_hosts

    g = tmp_path_factory.mktemp("http_corpus2_copy") / "g"
    shutil.copytree(world["gallery"], g)
    app = create_app(TorchEmbedder(world["run"]), Gallery.open(g), guard=Guard(default_hosts("127.0.0.1"), "tok"))
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        yield c


AUTH = {"Authorization": "Bearer tok"}
MB5 = "x" * (5 * 1024 * 1024)


def _requests(image: bytes) -> dict[str, tuple[str, str, dict, int, str]]:
    cases: dict[str, tuple[str, str, dict, int, str]] = {}
    for w, h in ((1, 1), (1, 5000), (5000, 1), (7, 7), (7, 300)):
        tiny = _png(w, h)
        what = f"{w}×{h} image is below the 8-px minimum side"
        cases[f"verify-{w}x{h}"] = ("POST", "/verify", {"files": {"image_a": image, "image_b": tiny}}, 422, what)
        cases[f"embed-json-{w}x{h}"] = ("POST", "/embed", {"json": {"image": [_b64(tiny)]}}, 422, what)
        cases[f"add-{w}x{h}"] = ("POST", "/gallery", {"files": {"image": tiny}, "headers": AUTH}, 422, what)
    sliver = _png(8, 400)
    cases["search-8x400"] = ("POST", "/search", {"files": {"image": sliver}}, 422, "32:1 aspect-ratio limit")
    cases["verify-400x8"] = ("POST", "/verify", {"files": {"image_a": _png(400, 8), "image_b": image}}, 422,
                             "400×8 image is over the 32:1")  # fmt: skip
    limit = "label: over the 256-character limit"
    cases["add-label-5mb-multipart"] = ("POST", "/gallery", {"files": {"image": image}, "data": {"label": MB5},
                                                             "headers": AUTH}, 422, limit)  # fmt: skip
    cases["add-label-5mb-json"] = ("POST", "/gallery", {"json": {"image": _b64(image), "label": MB5}, "headers": AUTH},
                                   422, "label: 5,242,880 characters is over the 256-character limit")  # fmt: skip
    cases["add-label-257"] = ("POST", "/gallery", {"files": {"image": image}, "data": {"label": "a" * 257},
                                                   "headers": AUTH}, 422, "label: 257 characters")  # fmt: skip
    cases["search-label-5mb"] = ("POST", "/search", {"files": {"image": image}, "data": {"label": MB5}}, 422, limit)
    cases["search-k-long-text"] = ("POST", "/search", {"files": {"image": image}, "data": {"k": "1" * 2000}}, 422,
                                   "k: over the 256-character limit")  # fmt: skip
    cases["search-other-field-5mb"] = ("POST", "/search", {"files": {"image": image}, "data": {"note": MB5}}, 422,
                                       "note: over the 256-character limit")  # fmt: skip
    cases["verify-json-field-5mb"] = ("POST", "/verify", {"json": {"image_a": _b64(image), "image_b": _b64(image),
                                                                   "note": MB5}}, 422, "note: 5,242,880 characters")  # fmt: skip
    for i, host in enumerate(("[::1]anything", "[::1", "::1", "[::1]:8000x", "localhost:8000:8000",
                              "localhost@evil.example", "[evil.example]", "127.0.0.1:99999", "127.0.0.1 evil")):  # fmt: skip
        cases[f"host-malformed-{i}"] = ("GET", "/health", {"headers": {"Host": host}}, 400, "host not allowed")
        cases[f"host-malformed-add-{i}"] = ("POST", "/gallery", {"files": {"image": image},
                                            "headers": {**AUTH, "Host": host}}, 400, "host not allowed")  # fmt: skip
    return cases


def test_http_corpus_issue_30(http, world):
    image = world["image"].read_bytes()
    cases = _requests(image)
    size = http.get("/health").json()["gallery"]["size"]
    for name, (method, url, kwargs, status, fragment) in cases.items():
        r = http.request(method, url, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and fragment in detail, (name, detail)
        assert "Traceback" not in r.text and str(world["run"]) not in r.text, name
    assert http.get("/health").json()["gallery"]["size"] == size  # no refused request changed the gallery
    # the limits are not off by one: 8 px a side, 32:1 and 256 characters are accepted
    ok = http.post("/gallery", files={"image": _png(8, 256)}, data={"label": "a" * 256}, headers=AUTH)
    assert ok.status_code == 201 and ok.json()["label"] == "a" * 256
    assert len(cases) >= 40
