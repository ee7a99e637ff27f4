from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _decode_cache(tmp_path_factory):
    """Decoded-image caches of the tests (and of the processes they start) in a temp folder, not ~/.cache."""
    import os

    os.environ["SIAMKIT_CACHE"] = str(tmp_path_factory.mktemp("siamkit_cache"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory):
    """scikit-learn digits 0–199 as PNG files in a class-per-folder tree ``root/<digit>/<index>.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_pngs")
    d = load_digits()
    for i in range(200):
        folder = root / str(d.target[i])
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A digits model trained for 2 epochs (a few seconds): the run directory."""
    from siamkit.cli import main

    runs = tmp_path_factory.mktemp("small_runs")
    argv = ["train", "--epochs", "2", "--runs-dir", str(runs), "--name", "small", "--format", "json", "-q"]
    assert main(argv) == 0
    return runs / "small"


@contextlib.contextmanager
def uvicorn_serving(app, **config):
    """``app`` served by a real uvicorn server on a free loopback port (``config``: more ``uvicorn.Config``
    options) in a thread, for as long as the block runs; yields the port."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
