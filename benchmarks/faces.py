"""dlib's face ResNet in siamkit against dlib itself (``dlib-bin``), on real faces that installed packages ship:
Grace Hopper (matplotlib), the astronaut (scikit-image) and LFW faces (scikit-image's subset, enlarged and framed).

Prints ONE JSON line:
- ``parity``: the max absolute difference, per face, between siamkit's 128-d descriptor and dlib's
  ``face_recognition_model_v1.compute_face_descriptor`` of the same aligned chip (siamkit's alignment, which is
  dlib's ``get_face_chip`` of dlib's 5 landmarks);
- ``detection``: per photo, the faces the HOG detector finds and the seconds detection, landmarks and chip take;
- ``speed``: faces/s embedding batches of 32 of those chips on the CPU — siamkit's served model
  (``siamkit.load("dlib-face")``: channels-last PyTorch, and its ONNX export on ONNX Runtime unless ``--no-onnx``)
  beside dlib's batch ``compute_face_descriptor`` — best of ``--repeats``, after a warm-up.

    .venv/bin/python benchmarks/faces.py                    # about a minute on two cores
    .venv/bin/python benchmarks/faces.py --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dlib
import numpy as np
import torch
from PIL import Image

from siamkit.data import faces
from siamkit.data.face_samples import lfw_face, sample_paths
from siamkit.models.dlib_face import model_file
from siamkit.runs import load as load_run


def real_faces(lfw: int) -> dict[str, np.ndarray]:
    paths = sample_paths()
    images = {"grace_hopper": paths["grace_hopper"], "astronaut": paths["astronaut"]}
    out = {name: np.asarray(Image.open(p).convert("RGB")) for name, p in images.items()}
    out.update({f"lfw_{i:02d}": np.asarray(lfw_face(i)) for i in (0, 1, 2, 3, 5, 6, 7, 8)[:lfw]})
    return out


def best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=int, default=4, help="LFW faces besides the two photographs (default 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recognizer = dlib.face_recognition_model_v1(str(model_file()))
    aligner = faces.aligner()
    model = load_run("dlib-face", faces="off")  # chips in: the same pixels for both

    chips, parity, detection = {}, {}, {}
    for name, image in real_faces(args.lfw).items():
        t = time.perf_counter()
        found = aligner.detect(image)
        face = faces.pick_face(found)
        chips[name] = chip = aligner.chip(image, face)  # dlib's get_face_chip of dlib's 5 landmarks
        detection[name] = {"faces": len(found), "size": list(image.shape[:2]),
                           "seconds": round(time.perf_counter() - t, 4)}  # fmt: skip
        ours = model.embed(chip)
        theirs = np.array(recognizer.compute_face_descriptor(chip))
        parity[name] = float(np.abs(ours - theirs).max())
    batch = np.stack([chips[k] for k in sorted(chips)] * (32 // len(chips) + 1))[:32]
    x = model.inputs(list(batch))[0]
    chips_list = list(batch)
    speed: dict[str, float] = {"batch": 32, "torch_threads": torch.get_num_threads()}
    speed["siamkit_torch"] = round(best_rate(lambda: model.embedder.embed(x), 32, args.repeats), 1)
    speed["dlib"] = round(best_rate(lambda: recognizer.compute_face_descriptor(chips_list), 32, args.repeats), 1)
    if not args.no_onnx:
        with tempfile.TemporaryDirectory() as tmp:
            onnx = Path(tmp) / "dlib-face.onnx"
            model.export(onnx)
            on = load_run("dlib-face", backend="onnx", onnx=str(onnx), faces="off")
            speed["siamkit_onnx"] = round(best_rate(lambda: on.embedder.embed(x), 32, args.repeats), 1)
    print(json.dumps({"benchmark": "faces", "faces": len(chips), "parity_max_abs": parity,
                      "parity_max_abs_all": max(parity.values()), "detection": detection, "speed": speed}))  # fmt: skip


if __name__ == "__main__":
    main()
