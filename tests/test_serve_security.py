"""A hostile client against the service: DNS rebinding (Host), cross-site requests (Origin), the edit token,
deletes outside the gallery, unbounded work per request, deep JSON, and server paths in answers."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from fastapi.testclient import TestClient

from siamkit.cli import main
from siamkit.index import Gallery
from siamkit.index.gallery import connect
from siamkit.index.ops import build
from siamkit.runs.embedders import TorchEmbedder
from siamkit.serve.app import create_app
from siamkit.serve.guard import Guard, default_hosts
from siamkit.serve.uploads import UploadLimits


@pytest.fixture(scope="module")
def gallery_dir(small_run, digits_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("sec_gallery") / "g"
    build(str(small_run), [str(digits_images / "0"), str(digits_images / "1")], str(out))
    return out


def _client(small_run, gallery_dir, tmp_path, guard=None, limits=None):
    g = tmp_path / "g"
    shutil.copytree(gallery_dir, g)
    app = create_app(TorchEmbedder(small_run), Gallery.open(g), limits=limits or UploadLimits(), guard=guard)
    c = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    c.gallery_dir = g
    return c


def _png(digits_images) -> bytes:
    return (digits_images / "0" / "000.png").read_bytes()


def test_only_the_hosts_it_was_started_for(small_run, gallery_dir, tmp_path, digits_images):
    with _client(small_run, gallery_dir, tmp_path, Guard(default_hosts("127.0.0.1"))) as c:
        assert c.get("/gallery/0/image").status_code == 200
        assert c.get("/gallery/0/image", headers={"Host": "localhost:8000"}).status_code == 200
        r = c.get("/gallery/0/image", headers={"Host": "attacker.example"})  # DNS rebinding
        assert r.status_code == 400 and "--allowed-host" in r.json()["detail"]
        assert c.post("/gallery", files={"image": _png(digits_images)},
                      headers={"Host": "attacker.example:8000"}).status_code == 400  # fmt: skip
    extra = Guard(default_hosts("0.0.0.0", ["box.lan", "[FE80::1]"]), token="t")
    assert extra.allowed_hosts is not None and "fe80::1" in extra.allowed_hosts  # as a Host header names it
    assert extra.allowed_hosts is not None and "box.lan" in extra.allowed_hosts and "0.0.0.0" not in extra.allowed_hosts


MALFORMED_HOSTS = [
    "[::1]anything", "[::1]:8000x", "[::1", "::1]", "::1", "[::1]:", "[::1]:99999", "[127.0.0.1]", "[localhost]",
    "[evil.example]", "localhost:8000:8000", "localhost:", "localhost:-1", "localhost:99999", "127.0.0.1:8000 x",
    "localhost@evil.example", "evil.example@localhost", "localhost/evil", "localhost\\evil", "localhost%00", "",
    "127.0.0.1.evil.example", "localhost evil.example", "[::1]@evil.example", "[[::1]]",
]  # fmt: skip


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
def test_a_malformed_host_is_refused_like_a_foreign_one(host):
    from siamkit.serve.guard import GuardMiddleware

    guard = GuardMiddleware(None, Guard(default_hosts("127.0.0.1")))  # type: ignore[arg-type]
    refusal = guard.check("GET", "/health", {"host": host})
    assert refusal is not None and refusal[0] == 400 and "--allowed-host" in refusal[1], host
    for good in ("127.0.0.1", "127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]", "[::1]:8000",
                 "[0:0:0:0:0:0:0:1]:80"):  # fmt: skip
        assert guard.check("GET", "/health", {"host": good}) is None, good


def test_malformed_hosts_over_http(small_run, gallery_dir, tmp_path, digits_images):
    with _client(small_run, gallery_dir, tmp_path, Guard(default_hosts("127.0.0.1"))) as c:
        for host in ("[::1]anything", "[::1", "::1", "localhost:8000:1", "[evil.example]", "localhost@evil.example"):
            r = c.get("/health", headers={"Host": host})
            assert r.status_code == 400 and "--allowed-host" in r.json()["detail"], host
            r = c.post("/verify", files={"image_a": _png(digits_images), "image_b": _png(digits_images)},
                       headers={"Host": host})  # fmt: skip
            assert r.status_code == 400, host
        assert c.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200


def test_cross_origin_changes_are_refused(small_run, gallery_dir, tmp_path, digits_images):
    with _client(small_run, gallery_dir, tmp_path) as c:
        size = c.get("/health").json()["gallery"]["size"]
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
            r = c.post("/gallery", files={"image": _png(digits_images)}, headers=headers)
            assert r.status_code == 403 and "cross-origin" in r.json()["detail"], headers
            assert c.delete("/gallery/0", headers=headers).status_code == 403
        assert c.get("/health").json()["gallery"]["size"] == size  # nothing changed
        # the service's own page (same origin) and clients without Origin (curl, scripts) may
        ok = c.post("/gallery", files={"image": _png(digits_images)}, headers={"Origin": "http://127.0.0.1:8000"})
        assert ok.status_code == 201
        assert c.delete(f"/gallery/{ok.json()['id']}").status_code == 200
        # reads stay open to any page (GET carries no state change)
        assert c.get("/health", headers={"Origin": "https://evil.example"}).status_code == 200


def test_edits_need_the_token_when_one_is_set(small_run, gallery_dir, tmp_path, digits_images):
    with _client(small_run, gallery_dir, tmp_path, Guard(token="s3cret")) as c:
        png = _png(digits_images)
        r = c.post("/gallery", files={"image": png})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/gallery", files={"image": png}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.delete("/gallery/0").status_code == 401
        ok = c.post("/gallery", files={"image": png}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.delete(f"/gallery/{ok.json()['id']}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/verify", files={"image_a": png, "image_b": png}).status_code == 200  # reads need none


def test_serving_beyond_loopback_needs_a_token(small_run, capsys, monkeypatch):
    monkeypatch.delenv("SIAMKIT_TOKEN", raising=False)
    code = main(["serve", str(small_run), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and "--token" in err and err.strip().count("\n") == 0


def test_removing_an_item_never_deletes_outside_the_uploads(small_run, gallery_dir, tmp_path, digits_images):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with _client(small_run, gallery_dir, tmp_path) as c:
        g = c.gallery_dir
        con = connect(g)  # a tampered database: item paths that point out of the gallery
        first, second = [row[0] for row in con.execute("SELECT id FROM items ORDER BY id LIMIT 2")]
        con.execute("UPDATE items SET path = '../victim.txt' WHERE id = ?", (first,))
        con.execute("UPDATE items SET path = 'uploads/../../victim.txt' WHERE id = ?", (second,))
        con.close()
        c.app.state.service.gallery = Gallery.open(g)
        assert c.delete(f"/gallery/{first}").status_code == 200
        assert victim.read_text() == "keep me"
    code = main(["index", "remove", str(g), str(second), "-q"])
    assert code == 0 and victim.read_text() == "keep me"


def test_work_per_request_is_bounded(small_run, gallery_dir, tmp_path, digits_images):
    b64 = base64.b64encode(_png(digits_images)).decode()
    with _client(small_run, gallery_dir, tmp_path) as c:
        r = c.post("/embed", json={"image": [b64] * 65})  # the JSON list: the same cap as multipart parts
        assert r.status_code == 413 and "64 images" in r.json()["detail"]
        assert c.post("/embed", json={"image": [b64] * 64}).status_code == 200
        deep = "[" * 100_000 + "]" * 100_000
        r = c.post("/verify", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested" in r.json()["detail"]
    limits = UploadLimits(max_request_pixels=3 * 64)  # three 8×8 digits
    with _client(small_run, gallery_dir, tmp_path / "b", limits=limits) as c:
        assert c.post("/embed", json={"image": [b64] * 3}).status_code == 200
        r = c.post("/embed", json={"image": [b64] * 4})
        assert r.status_code == 422 and "budget of 192 pixels" in r.json()["detail"]


def test_answers_never_carry_server_paths(small_run, gallery_dir, tmp_path, digits_images):
    with _client(small_run, gallery_dir, tmp_path) as c:
        # another process rebuilds the gallery with another model (another hash) while the service runs
        meta = json.loads((c.gallery_dir / "gallery.json").read_text())
        meta["model_hash"] = "f" * 64
        (c.gallery_dir / "gallery.json").write_text(json.dumps(meta))
        con = connect(c.gallery_dir)  # a rebuilt gallery is a new one (another uid)
        con.execute("UPDATE state SET value = 'rebuilt' WHERE key = 'uid'")
        con.close()
        v = c.post("/verify", files={"image_a": _png(digits_images), "image_b": _png(digits_images)})
        assert v.status_code == 200 and v.json()["threshold_info"]["rule_text"].startswith("same if distance ≤")
        h = c.get("/health")
        assert h.status_code == 200 and "another model" in h.json()["gallery"]["error"]
        for r in (c.post("/search", files={"image": _png(digits_images)}), c.get("/gallery"),
                  c.get("/gallery/0/image"), h, v):  # fmt: skip
            assert str(tmp_path) not in r.text and str(small_run) not in r.text, r.text
            assert "/" not in json.dumps(r.json()).replace("\\/", "").replace("/gallery", ""), r.text


def test_an_upload_is_turned_upright_like_a_file():
    import io

    from PIL import Image

    from siamkit.serve.uploads import decode_image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("L", (40, 20)).save(buf, format="PNG", exif=exif.tobytes())
    img = decode_image(buf.getvalue(), UploadLimits())
    assert (img.width, img.height) == (20, 40)
