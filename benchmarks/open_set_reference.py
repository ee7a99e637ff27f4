"""What fixed, untrained descriptors reach on the open-set test identities of Fashion-MNIST: a reference for the
open-set targets (docs/open-set.md). Same retrieval protocol as ``open_set.py`` (leave-one-out over the test
identities' images of the test file, Euclidean distance of L2-normalised vectors): raw pixels, and a histogram of
oriented gradients (HOG: 9 unsigned orientations, magnitude-weighted, square-rooted) pooled over 4×4-px cells,
and over a pyramid of 4, 7 and 14-px cells. Nothing is trained, so no training identity is used. One JSON line per
split, then one with the ratios to the pixels.

    .venv/bin/python benchmarks/open_set_reference.py                  # the standard folds and 2 seeded random ones
    .venv/bin/python benchmarks/open_set_reference.py --test-classes 1,4,6,7,8
    .venv/bin/python benchmarks/open_set_reference.py --variants
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from siamkit.data.readers import read_fashion_mnist
from siamkit.evaluate.metrics import retrieval_metrics
from siamkit.models.descriptors import GradientHistogram

FOLDS = ["1,3,5,7,9", "0,2,4,6,8", "0,1,2,3,4"]


def descriptors(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixels and siamkit's ``GradientHistogram`` (the ``hog`` backbone's descriptor) over 4-px cells and over the
    4/7/14-px pyramid, with zeros beyond the border as these black-background images have."""
    return {
        "pixels": x.flatten(1),
        "hog_4px": GradientHistogram(grids=(7,), edges="zeros")(x),
        "hog_pyramid": GradientHistogram(grids=(7, 4, 2), edges="zeros")(x),
    }


def pixel_variants(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"pixels_sqrt": x.sqrt().flatten(1), "pixels_blur3": F.avg_pool2d(x, 3, 1, 1).flatten(1),
            "pixels_centred": x.flatten(1) - x.flatten(1).mean(1, keepdim=True)}  # fmt: skip


def pca_variants(fit: torch.Tensor, x: torch.Tensor, dim: int = 128) -> dict[str, torch.Tensor]:
    """Pixels projected on the first ``dim`` principal axes of ``fit`` (L2-normalised rows), and whitened."""
    a = F.normalize(fit.flatten(1), dim=1)
    mu = a.mean(0)
    _, sv, vt = torch.linalg.svd(a - mu, full_matrices=False)
    var = sv[:dim] ** 2 / len(a)
    z = (F.normalize(x.flatten(1), dim=1) - mu) @ vt[:dim].T
    return {"pixels_pca128": z, "pixels_whitened128": z / (var + var.mean()).sqrt()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-classes", help="one split's test classes (default: the standard and 2 random folds)")
    ap.add_argument("--data", help="a folder of Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--variants", action="store_true", help="also pixel transforms and PCA fitted on the others")
    args = ap.parse_args()
    train, test = read_fashion_mnist(args.data)
    assert test is not None
    rng = np.random.default_rng(0)
    folds = [args.test_classes] if args.test_classes else FOLDS + [
        ",".join(map(str, sorted(rng.permutation(10)[:5]))) for _ in range(2)]  # fmt: skip
    ratios: dict[str, list[float]] = {}
    for fold in folds:
        classes = [int(c) for c in fold.split(",")]
        keep = np.isin(test.labels, classes)
        x = torch.as_tensor(test.images[torch.from_numpy(keep)]).float() / 255.0
        labels = test.labels[keep]
        line: dict[str, object] = {"benchmark": "open_set_reference", "test_classes": classes,
                                   "images": int(keep.sum())}  # fmt: skip
        found = descriptors(x)
        if args.variants:
            others = np.flatnonzero(~np.isin(train.labels, classes))
            fit = torch.as_tensor(train.images[torch.from_numpy(rng.choice(others, 10000, replace=False))]).float()
            found |= pixel_variants(x) | pca_variants(fit / 255.0, x)
        for name, vectors in found.items():
            m = retrieval_metrics(F.normalize(vectors, dim=1), labels)
            line[name] = {"precision_at_1": round(m["precision_at_1"], 4), "map_at_r": round(m["map_at_r"], 4)}
        for name in [n for n in found if n != "pixels"]:
            ratio = line[name]["map_at_r"] / line["pixels"]["map_at_r"]  # type: ignore[index]
            line[name]["map_at_r_over_pixels"] = round(ratio, 3)  # type: ignore[index]
            ratios.setdefault(name, []).append(ratio)
        print(json.dumps(line), flush=True)
    summary = {name: {"mean": round(statistics.mean(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}
               for name, r in ratios.items()}  # fmt: skip
    print(json.dumps({"benchmark": "open_set_reference", "map_at_r_over_pixels": summary, "folds": len(folds)}))


if __name__ == "__main__":
    main()
