"""The service explains its verdicts and bounds what a client may make it do: the threshold's rule and false-accept
rate in every verify/search answer, search hits marked false accepts against the query's label, tiny and
sliver-shaped uploads and megabyte labels refused in one line, slow clients (one byte at a time) cut off while
others are served, and ``siamkit serve`` on a busy port refused before it says "serving"."""

from __future__ import annotations

import io
import json
import select
import shutil
import socket
import threading
import time

import httpx
import pytest
from conftest import uvicorn_serving
from fastapi.testclient import TestClient
from PIL import Image

from siamkit.cli import main
from siamkit.index import Gallery
from siamkit.index.ops import build
from siamkit.runs.embedders import ModelSource, TorchEmbedder
from siamkit.runs.model import open_model
from siamkit.serve.app import create_app
from siamkit.serve.uploads import MAX_FIELD_CHARS


@pytest.fixture(scope="module")
def gallery_dir(small_run, digits_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("limits_gallery") / "g"
    build(str(small_run), [str(digits_images)], str(out))
    return out


@pytest.fixture
def client(small_run, gallery_dir, tmp_path):
    g = tmp_path / "g"
    shutil.copytree(gallery_dir, g)
    with TestClient(create_app(TorchEmbedder(small_run), Gallery.open(g)), raise_server_exceptions=False) as c:
        yield c


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_verify_and_search_answers_carry_the_rule_and_its_false_accept_rate(client, small_run, digits_images):
    a, b = (digits_images / p for p in ("0/000.png", "0/010.png"))
    r = client.post("/verify", files={"image_a": a.read_bytes(), "image_b": b.read_bytes()})
    assert r.status_code == 200, r.text
    info = r.json()["threshold_info"]
    saved = json.loads((small_run / "metrics.json").read_text())["threshold_info"]
    assert info["rule"] == saved["rule"] and info["false_accept_rate"] == saved["false_accept_rate"]
    assert info["rule_text"] == (
        f"same if distance ≤ {saved['threshold']:.4f} (rule {saved['rule']}, set on {saved['set_on']}); "
        f"false-accept rate {saved['false_accept_rate']:.4f} there, {saved['test']['false_accept_rate']:.4f} on "
        f"{saved['test']['on']}"
    )
    s = client.post("/search", files={"image": a.read_bytes()}, data={"k": "3"}).json()
    assert s["threshold_info"] == info and s["query_label"] is None
    for answer in (r.text, json.dumps(s)):  # no server path, not even in the warning's calibrate hint
        assert str(small_run) not in answer and str(small_run.parent) not in answer


def test_a_threshold_given_at_start_is_described_as_given(small_run):
    model = open_model(str(small_run), ModelSource(threshold=0.5))
    client = TestClient(create_app(model))
    info = client.get("/health").json()["threshold_info"]
    assert info["rule"] == "given (--threshold)" and info["threshold"] == 0.5
    assert info["rule_text"] == ("same if distance ≤ 0.5000 (rule given (--threshold), set on nothing the run "
                                 "recorded); false-accept rate not measured")  # fmt: skip
    model.threshold = 0.25  # changed in Python after the app was made: the answers follow
    assert client.get("/health").json()["threshold_info"]["rule_text"].startswith("same if distance ≤ 0.2500 ")


def test_search_hits_under_another_label_within_the_threshold_are_false_accepts(client, digits_images):
    q = (digits_images / "7" / "007.png").read_bytes()
    hits = client.post("/search", files={"image": q}, data={"k": "20", "label": "7"}).json()["results"]
    assert hits[0]["label"] == "7" and hits[0]["match"] and hits[0]["true_accept"] and not hits[0]["false_accept"]
    for h in hits:
        assert h["false_accept"] == (h["match"] and h["label"] != "7"), h
        assert h["true_accept"] == (h["match"] and h["label"] == "7"), h
    # the query said to be someone the gallery does not hold: every match is a false accept
    other = client.post("/search", files={"image": q}, data={"k": "5", "label": "nobody"}).json()
    assert other["query_label"] == "nobody"
    assert [h["false_accept"] for h in other["results"]] == [bool(h["match"]) for h in other["results"]]
    assert other["results"][0]["false_accept"] is True  # the image itself, at distance 0
    unlabelled = client.post("/search", files={"image": q}, data={"k": "5"}).json()["results"]
    assert all(h["false_accept"] is None and h["true_accept"] is None for h in unlabelled)


@pytest.mark.parametrize(("size", "fragment"), [((1, 1), "1×1 image is below the 8-px minimum side"),
                                                ((1, 5000), "1×5000 image is below the 8-px minimum side"),
                                                ((5000, 7), "5000×7 image is below the 8-px minimum side"),
                                                ((8, 400), "8×400 image is over the 32:1 aspect-ratio limit")])  # fmt: skip
def test_tiny_and_sliver_uploads_are_refused_not_resized(client, digits_images, size, fragment):
    good = (digits_images / "0" / "000.png").read_bytes()  # 8×8: the smallest accepted, as in training
    bad = _png(*size)
    size_before = client.get("/health").json()["gallery"]["size"]
    for method, url, kwargs in (
        ("POST", "/verify", {"files": {"image_a": good, "image_b": bad}}),
        ("POST", "/embed", {"files": {"image": bad}}),
        ("POST", "/search", {"files": {"image": bad}}),
        ("POST", "/gallery", {"files": {"image": bad}}),
    ):
        r = client.request(method, url, **kwargs)
        assert r.status_code == 422 and fragment in r.json()["detail"], (url, r.text)
    assert client.get("/health").json()["gallery"]["size"] == size_before
    assert client.post("/embed", files={"image": _png(8, 256)}).status_code == 200  # 32:1 is still accepted


def test_megabyte_labels_are_refused_naming_the_field_and_the_limit(client, digits_images):
    png = (digits_images / "0" / "000.png").read_bytes()
    size = client.get("/health").json()["gallery"]["size"]
    huge = "x" * (5 * 1024 * 1024)
    for kwargs in ({"files": {"image": png}, "data": {"label": huge}},  # multipart: stopped at the limit
                   {"json": {"image": __import__("base64").b64encode(png).decode(), "label": huge}},
                   {"files": {"image": png}, "data": {"label": "é" * (MAX_FIELD_CHARS + 1)}}):  # fmt: skip
        for url in ("/gallery", "/search"):
            r = client.post(url, **kwargs)
            detail = r.json()["detail"]
            assert r.status_code == 422 and detail.startswith("label: ") and "256-character limit" in detail, detail
    assert client.get("/health").json()["gallery"]["size"] == size
    ok = client.post("/gallery", files={"image": png}, data={"label": "é" * MAX_FIELD_CHARS})
    assert ok.status_code == 201 and ok.json()["label"] == "é" * MAX_FIELD_CHARS


# --- slow clients, on a real uvicorn server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(small_run, gallery_dir):
    from siamkit.serve.timeouts import deadline_protocol

    app = create_app(TorchEmbedder(small_run), Gallery.open(gallery_dir), request_timeout=1.0)
    with uvicorn_serving(app, http=deadline_protocol(1.0)) as port:
        yield port


def _trickle(port: int, head: bytes, body: bytes, every: float, out: dict) -> None:
    """Send ``head`` at once, then ``body`` a byte every ``every`` s, reading whatever the server answers."""
    sock = socket.create_connection(("127.0.0.1", port))
    start = time.monotonic()
    got, i = b"", 0
    try:
        sock.sendall(head)
        while time.monotonic() - start < 8:
            ready, _, _ = select.select([sock], [], [], every)
            if ready:
                chunk = sock.recv(65536)
                if not chunk:
                    break  # the server closed the connection
                got += chunk
            elif i < len(body):
                sock.sendall(body[i : i + 1])
                i += 1
    except OSError:  # reset by the server
        pass
    finally:
        out.update(answer=got, seconds=time.monotonic() - start, sent=i)
        sock.close()


def _fast_requests(port: int, digits_images, until: threading.Thread) -> list[float]:
    png = (digits_images / "0" / "000.png").read_bytes()
    took = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        while until.is_alive() and len(took) < 40:
            t = time.monotonic()
            assert c.get("/health").status_code == 200
            assert c.post("/verify", files={"image_a": png, "image_b": png}).status_code == 200
            took.append(time.monotonic() - t)
            time.sleep(0.05)
    return took


def test_a_body_sent_a_byte_at_a_time_is_cut_off_while_others_are_served(slow_server, digits_images):
    body = json.dumps({"image": "A" * 400}).encode()
    head = (f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1:{slow_server}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    out: dict = {}
    slow = threading.Thread(target=_trickle, args=(slow_server, head, body, 0.1, out))
    slow.start()
    took = _fast_requests(slow_server, digits_images, slow)
    slow.join(10)
    answer = out["answer"].decode("latin-1")
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "connection: close" in answer.lower() and "--request-timeout" in answer
    assert 0.9 < out["seconds"] < 4 and out["sent"] < len(body)  # cut off after about 1 s, long before the end
    assert len(took) >= 3  # the other client was answered all along, again and again


def test_headers_sent_a_byte_at_a_time_are_cut_off_while_others_are_served(slow_server, digits_images):
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{slow_server}\r\nX-Padding: {'p' * 200}\r\n\r\n".encode()
    out: dict = {}
    slow = threading.Thread(target=_trickle, args=(slow_server, b"", head, 0.1, out))
    slow.start()
    took = _fast_requests(slow_server, digits_images, slow)
    slow.join(10)
    assert out["answer"] == b"" and 0.9 < out["seconds"] < 4 and out["sent"] < len(head)
    assert len(took) >= 3
    with httpx.Client(base_url=f"http://127.0.0.1:{slow_server}") as c:  # a keep-alive client is not cut off
        for _ in range(3):
            assert c.get("/health").status_code == 200
            time.sleep(0.4)


# --- the port ---------------------------------------------------------------------------------------------------


def test_serve_on_a_busy_port_fails_before_saying_serving(small_run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t = time.monotonic()
        code = main(["serve", str(small_run), "--port", str(port)])
        took = time.monotonic() - t
    out, err = capsys.readouterr()
    assert code == 2 and "serving" not in out and out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0] and "in use" in lines[0], err
    assert took < 5  # refused before the model is loaded


def test_serve_refuses_a_request_timeout_out_of_range(small_run, capsys):
    for value in ("0", "-1", "nan"):
        assert main(["serve", str(small_run), "--request-timeout", value]) == 2
        err = capsys.readouterr().err
        assert "--request-timeout" in err and err.strip().count("\n") == 0


def test_siamkit_serve_binds_first_then_says_where_and_cuts_slow_clients(small_run, gallery_dir, tmp_path, capsys):
    """The command as a user runs it: port 0 is announced as the port really bound; a second service on that port
    is refused in one line, exit 2, before "serving"; a client trickling its headers is cut off."""
    import os
    import signal
    import subprocess
    import sys

    g = tmp_path / "g"
    shutil.copytree(gallery_dir, g)
    argv = [sys.executable, "-m", "siamkit", "serve", str(small_run), "--gallery", str(g), "--port", "0", "--format",
            "json", "--request-timeout", "1"]  # fmt: skip
    env = {**os.environ, "SIAMKIT_TOKEN": ""}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        info = json.loads(line)
        port = int(info["url"].rsplit(":", 1)[1])
        assert port > 0 and info["gallery_size"] == 200
        with httpx.Client(base_url=info["url"]) as c:
            deadline = time.time() + 20
            while True:
                try:
                    assert c.get("/health").json()["gallery"]["size"] == 200
                    break
                except httpx.TransportError:
                    assert time.time() < deadline, "the service did not answer"
                    time.sleep(0.1)
        capsys.readouterr()
        assert main(["serve", str(small_run), "--port", str(port)]) == 2  # the port it holds: taken
        out, err = capsys.readouterr()
        assert out == "" and err.strip().count("\n") == 0 and f"port {port}" in err and "--port" in err
        out: dict = {}
        _trickle(port, b"", f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(), 0.1, out)
        assert out["answer"] == b"" and 0.9 < out["seconds"] < 4
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
