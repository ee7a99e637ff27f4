"""Open-set protocol: identity splits disjoint for every source kind (asserted on the identities), explicit class
lists, refusals, checkpoint and threshold chosen on validation identities, and the baselines by hand."""

from __future__ import annotations

import csv
import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.config import load_config
from siamkit.data.imageset import ImageSet
from siamkit.data.readers import load_dataset, stratified_sample
from siamkit.data.splits import make_splits
from siamkit.errors import ConfigError, DataError

N_CLASSES = 10


def _write_idx(path: Path, arr: np.ndarray) -> None:
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload))


def _class_images(rng: np.random.Generator, per_class: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(N_CLASSES), per_class)
    images = rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8)
    return images, labels


def _source(kind: str, root: Path) -> tuple[str, list[str]]:
    """Write a 10-class source of ``kind``; return (data.source, its class names in label order)."""
    rng = np.random.default_rng(0)
    images, labels = _class_images(rng, 6)
    names = [f"id{c}" for c in range(N_CLASSES)]
    if kind == "folder":
        for i, (img, y) in enumerate(zip(images, labels)):
            (root / names[y]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / names[y] / f"{i}.png")
    elif kind == "flat":
        root.mkdir(parents=True)
        for i, (img, y) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(root / f"img_{names[y]}_{i}.png")
    elif kind == "idx":
        root.mkdir(parents=True)
        _write_idx(root / "train-images-idx3-ubyte.gz", images)
        _write_idx(root / "train-labels-idx1-ubyte.gz", labels)
        test_images, test_labels = _class_images(rng, 4)
        _write_idx(root / "t10k-images-idx3-ubyte.gz", test_images)
        _write_idx(root / "t10k-labels-idx1-ubyte.gz", test_labels)
        names = [str(c) for c in range(N_CLASSES)]
    elif kind == "cifar10":  # the real batch format: 6 training and 4 test images per class
        _write_cifar(root, rng)
        from siamkit.data.cifar import CIFAR10_CLASSES

        names = list(CIFAR10_CLASSES)
    else:
        return "digits", [str(c) for c in range(N_CLASSES)]
    return str(root), names


def _write_cifar(root: Path, rng: np.random.Generator) -> None:
    """A CIFAR-10 folder as it ships (protocol-2 pickles of dicts with bytes keys): 5 training batches of 12 images
    and a test batch of 40, classes in turn (6 training and 4 test images of each)."""
    import pickle

    from siamkit.data.cifar import CIFAR10_FOLDER, TEST_BATCH, TRAIN_BATCHES

    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    offset = 0
    for name, n in [(b, 12) for b in TRAIN_BATCHES] + [(TEST_BATCH, 40)]:
        labels = [(offset + i) % N_CLASSES for i in range(n)]
        offset = 0 if name == TRAIN_BATCHES[-1] else offset + n
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}  # fmt: skip
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)


def _splits(source: str, *overrides: str, seed: int = 0):
    cfg = load_config(None, [f"data.source={source}", "data.split=identity", *overrides])
    bundle = load_dataset(cfg.data)
    return bundle, make_splits(bundle, cfg.data, seed)


def _ids(split) -> set[str]:
    return {split.images.class_names[c] for c in np.unique(split.images.labels)}


@pytest.mark.parametrize("kind", ["folder", "flat", "idx", "digits", "cifar10"])
@pytest.mark.parametrize("seed", [0, 1])
def test_identity_split_disjoint_for_every_source(tmp_path, kind, seed):
    source, names = _source(kind, tmp_path / kind)
    bundle, s = _splits(source, seed=seed)
    train, val, test = _ids(s.train), _ids(s.val), _ids(s.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(names)
    assert len(val) >= 2 and len(test) >= 2
    assert s.method == "identity"
    assert s.identities == {"train": sorted(train, key=names.index), "validation": sorted(val, key=names.index),
                            "test": sorted(test, key=names.index)}  # fmt: skip
    if kind in ("idx", "cifar10"):  # test identities' images come from the test files, the others from training's
        assert bundle.test is not None
        assert len(s.test.images) == 4 * len(test) and len(s.train.images) == 6 * len(train)
        wanted = np.isin(bundle.test.labels, [names.index(n) for n in test])
        assert torch.equal(s.test.images.images, bundle.test.images[torch.from_numpy(np.flatnonzero(wanted))])


@pytest.mark.parametrize("kind", ["folder", "idx"])
def test_explicit_class_lists_by_name_or_index(tmp_path, kind):
    source, names = _source(kind, tmp_path / kind)
    train = f"{names[0]},{names[2]},{names[4]},{names[6]}"
    _, s = _splits(source, f"data.train_classes={train!r}", "data.val_classes=[8, 9]", "data.test_classes=1,3,5,7")
    assert _ids(s.train) == {names[c] for c in (0, 2, 4, 6)}
    assert _ids(s.val) == {names[8], names[9]}
    assert _ids(s.test) == {names[c] for c in (1, 3, 5, 7)}
    # the label space a proxy loss needs spans all three parts: the highest label (9) is a validation identity
    assert int(s.train.images.labels.max()) == 6 and s.n_classes == 10
    # no validation list: validation identities are carved from the training list (at least 2)
    _, s = _splits(source, "data.train_classes=0,2,4,6,8", "data.test_classes=1,3,5,7,9")
    assert _ids(s.val) <= {names[c] for c in (0, 2, 4, 6, 8)} and len(_ids(s.val)) == 2
    assert _ids(s.train) == {names[c] for c in (0, 2, 4, 6, 8)} - _ids(s.val)


def test_folder_class_names_win_over_indices(tmp_path):
    # folders named "1".."9","0" in sorted order: the name "1" is the class folder "1", not index 1
    source, names = _source("folder", tmp_path / "f")
    for i, n in enumerate(names):
        (tmp_path / "f" / n).rename(tmp_path / "f" / str((i + 1) % N_CLASSES))
    _, s = _splits(source, "data.test_classes=1,2", "data.val_classes=3,4")
    assert _ids(s.test) == {"1", "2"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.val_classes=[0]"], "leaves 1 identity for validation"),
        (["data.test_classes=[5]"], "leaves 1 identity for test"),
        (["data.train_classes=[0,1]", "data.test_classes=1,2"], "overlap in 1"),
        (["data.test_classes=[nope]"], "data.test_classes: no class 'nope'"),
        (["data.train_classes=0,1", "data.val_classes=2,3"], "no images in that part"),
    ],
)
def test_bad_identity_splits_are_refused_in_one_line(tmp_path, overrides, message):
    source, _ = _source("idx", tmp_path / "idx")
    if "no images" in message:  # a training identity missing from the training files
        _write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", np.repeat(np.r_[np.arange(2, 10), 2, 3], 6))
    with pytest.raises((ConfigError, DataError), match=message) as info:
        _splits(source, *overrides)
    assert "\n" not in str(info.value)


def test_auto_split_is_identity_for_folders_with_enough_identities(tmp_path, digits_images):
    source, _ = _source("folder", tmp_path / "f")
    cfg = load_config(None, [f"data.source={source}"])
    bundle = load_dataset(cfg.data)
    assert make_splits(bundle, cfg.data, 0).method == "identity"
    cfg = load_config(None, ["data.source=digits"])  # a standard set keeps its closed-set protocol
    assert make_splits(load_dataset(cfg.data), cfg.data, 0).method == "random"


def test_limit_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    pick = stratified_sample(labels, 10)
    assert np.bincount(labels[pick]).tolist() == [1, 2, 3, 4]
    assert np.array_equal(pick, stratified_sample(labels, 10)) and len(np.unique(pick)) == 10
    cfg = load_config(None, ["data.limit=100"])
    got = load_dataset(cfg.data).images
    assert len(got) == 100 and len(np.unique(got.labels)) == 10  # digits are not class-sorted, but every class stays


# --- baselines by hand -----------------------------------------------------------------------------------


def _loop_p1_map_at_r(vectors: list[list[float]], labels: list[int]) -> tuple[float, float]:
    n, p1, mapr = len(labels), 0.0, 0.0
    for i in range(n):
        d = [(math.dist(vectors[i], vectors[j]), j) for j in range(n) if j != i]
        d.sort()
        r = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        p1 += labels[d[0][1]] == labels[i]
        hits, ap = 0, 0.0
        for rank, (_, j) in enumerate(d[:r], start=1):
            if labels[j] == labels[i]:
                hits += 1
                ap += hits / rank
        mapr += ap / r
    return p1 / n, mapr / n


def test_pixel_baseline_equals_hand_computation():
    from siamkit.config import EvalConfig
    from siamkit.evaluate.evaluator import evaluate_embeddings, pixel_embeddings

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (9, 1, 3, 3), dtype=np.uint8)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    images = ImageSet(torch.from_numpy(raw), labels, ["a", "b", "c"])
    emb = pixel_embeddings(images.images)
    by_hand = []
    for img in raw:
        flat = [float(v) for v in img.reshape(-1)]
        norm = math.sqrt(sum(v * v for v in flat))
        by_hand.append([v / norm for v in flat])
    assert torch.allclose(emb, torch.tensor(by_hand), atol=1e-6)
    result = evaluate_embeddings(emb, images, None, EvalConfig(n_pairs=20, n_triplets=20), None, seed=0)
    p1, mapr = _loop_p1_map_at_r(by_hand, labels.tolist())
    assert result.metrics["precision_at_1"] == pytest.approx(p1) and result.metrics["map_at_r"] == pytest.approx(mapr)


@pytest.fixture(scope="module")
def open_run(tmp_path_factory):
    """A short training run on digits with an identity split; its metrics and the prepared data."""
    from siamkit.plan import prepare_data
    from siamkit.training.pipeline import train_run

    runs = tmp_path_factory.mktemp("open")
    overrides = ["data.split=identity", "data.test_classes=0,1,2", "data.val_classes=3,4,5", "train.epochs=3",
                 "train.progress=false", "eval.n_pairs=400", "eval.tsne_points=0", f"runs_dir={runs}", "name=o"]  # fmt: skip
    r = train_run(load_config(None, overrides))
    return r, prepare_data(load_config(None, overrides)), Path(r["run_dir"])


def test_run_records_identities_and_baselines(open_run):
    r, _, run_dir = open_run
    assert r["split"] == "identity"
    assert r["identities"] == {"train": ["6", "7", "8", "9"], "validation": ["3", "4", "5"], "test": ["0", "1", "2"]}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["identities"] == r["identities"]
    for name in ("pixels", "untrained"):
        b = saved["baselines"][name]
        assert b["test"]["n_impostor"] == r["test"]["n_impostor"] and 0 <= b["test"]["map_at_r"] <= 1
    html = (run_dir / "report.html").read_text()
    assert "raw pixels" in html and "untrained net" in html and "Identities" in html


def test_pixel_and_untrained_baselines_match_a_recomputation(open_run):
    from siamkit.evaluate.evaluator import embed_images, evaluate_embeddings, pixel_embeddings
    from siamkit.evaluate.metrics import retrieval_metrics
    from siamkit.models.siamese import build_model
    from siamkit.plan import make_loss

    r, prep, _ = open_run
    test = prep.splits.test.images
    got = retrieval_metrics(pixel_embeddings(test.images), test.labels, (1,))
    assert r["baselines"]["pixels"]["test"]["map_at_r"] == pytest.approx(got["map_at_r"])
    ev = evaluate_embeddings(pixel_embeddings(test.images), test, None, prep.cfg.eval, None,
                             seed=prep.cfg.train.seed + 13)  # fmt: skip
    assert r["baselines"]["pixels"]["test"]["auc"] == pytest.approx(ev.metrics["auc"])
    torch.manual_seed(prep.cfg.train.seed)  # train_run's order: seed, data, model (the untrained weights)
    net = build_model(prep.cfg.model, prep.input_shape[0]).eval()
    make_loss(prep.cfg, 10, net.embedding_dim)
    emb = embed_images(net, test.images, prep.preprocess)
    assert r["baselines"]["untrained"]["test"]["map_at_r"] == pytest.approx(
        retrieval_metrics(emb, test.labels, (1,))["map_at_r"]
    )


def test_checkpoint_and_threshold_come_from_validation_identities(open_run):
    """Recompute what the run kept on the validation identities alone: the threshold is the best one on their
    pairs, and the kept epoch is the one whose validation MAP@R (on them) is highest. Scoring training
    identities instead gives other numbers, so this fails if they were used."""
    from siamkit.evaluate.evaluator import evaluate_split
    from siamkit.evaluate.metrics import best_threshold
    from siamkit.runs.artifact import load_run

    r, prep, run_dir = open_run
    val_ids = set(r["identities"]["validation"])
    assert _ids(prep.splits.val) == val_ids and not (val_ids & _ids(prep.splits.train))
    model = load_run(run_dir).model
    val = evaluate_split(model, prep.splits.val.images, None, prep.preprocess, prep.cfg.eval, threshold=None,
                         seed=prep.cfg.train.seed + 11)  # fmt: skip
    assert r["threshold"] == pytest.approx(best_threshold(val.pairs.distances, val.pairs.labels))
    train = evaluate_split(model, prep.splits.train.images, None, prep.preprocess, prep.cfg.eval, threshold=None,
                           seed=prep.cfg.train.seed + 11)  # fmt: skip
    assert best_threshold(train.pairs.distances, train.pairs.labels) != pytest.approx(r["threshold"])
    _check_kept_epoch(r, prep, run_dir)


def _check_kept_epoch(r, prep, run_dir: Path) -> None:
    """The kept epoch is the one whose validation MAP@R is highest, and the saved model is that epoch's: its
    validation MAP@R, recomputed, is the one history.csv recorded for it."""
    from siamkit.evaluate.evaluator import embed_images
    from siamkit.evaluate.metrics import retrieval_metrics
    from siamkit.runs.artifact import load_run

    with (run_dir / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    scores = [r["initial_val_map_at_r"]] + [float(h["val_map_at_r"]) for h in history]  # epoch 0 = initial weights
    assert r["best_epoch"] == int(np.argmax(scores))
    emb = embed_images(load_run(run_dir).model, prep.splits.val.images.images, prep.preprocess)
    kept = retrieval_metrics(emb, prep.splits.val.images.labels, (1,))["map_at_r"]
    assert kept == pytest.approx(scores[r["best_epoch"]], abs=1e-4)


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    """A run whose training beats its initial weights on validation, so that the checkpoint restored is a trained
    one: with ``open_run`` the kept epoch is 0 (on 4 training digits, training lowers the validation identities'
    MAP@R from 0.58 to 0.32) and an untrained model passes the check. Digits split at random (closed set: every
    class in training), where the ConvNet learns (validation MAP@R 0.34 → 0.6)."""
    from siamkit.plan import prepare_data
    from siamkit.training.pipeline import train_run

    runs = tmp_path_factory.mktemp("learn")
    overrides = ["data.split=random", "train.epochs=2", "train.progress=false", "eval.n_pairs=400",
                 "eval.tsne_points=0", "eval.episodes=0", f"runs_dir={runs}", "name=l"]  # fmt: skip
    r = train_run(load_config(None, overrides))
    return r, prepare_data(load_config(None, overrides)), Path(r["run_dir"])


def test_the_checkpoint_restored_is_the_best_trained_epoch(learning_run):
    r, prep, run_dir = learning_run
    assert r["best_epoch"] >= 1, "the fixture must keep a trained epoch, or this test proves nothing"
    _check_kept_epoch(r, prep, run_dir)


# --- recipes ------------------------------------------------------------------------------------------------


def test_open_set_recipe_fills_only_unset_keys():
    from siamkit.recipes import RECIPES, apply_recipe

    cfg = load_config(None, ["data.augment.contrast=0.1", "train.epochs=3"])  # asks for training: open-set
    apply_recipe(cfg, "identity")
    assert cfg.recipe == "open-set" and cfg.loss.ssl_weight == RECIPES["open-set"]["loss.ssl_weight"]
    assert cfg.data.augment.enabled is True and cfg.data.augment.contrast == 0.1  # the user's value wins
    assert cfg.model.backbone == "hog" and cfg.model.embedding_dim == 0
    cfg = load_config(None, ["model.backbone_args={widths: [16, 32]}"])  # options for the default backbone
    apply_recipe(cfg, "identity")
    assert cfg.model.backbone == "convnet" and cfg.model.embedding_dim == 0
    cfg = load_config(None, ["model.backbone=seed_cnn"])
    apply_recipe(cfg, "identity")
    assert cfg.model.backbone == "seed_cnn"
    cfg = load_config(None, [])
    apply_recipe(cfg, "random")
    assert cfg.recipe == "closed-set" and cfg.loss.ssl_weight == 0.0 and cfg.data.augment.enabled is False
    cfg = load_config(None, ["recipe=open-set"])
    apply_recipe(cfg, "random")  # named explicitly: applies whatever the split
    assert cfg.loss.ssl_weight > 0
    cfg = load_config(None, ["loss.name=triplet", "train.epochs=2"])  # sampled triplets: no labelled batches, no SSL
    apply_recipe(cfg, "identity")
    assert cfg.loss.ssl_weight == 0.0 and cfg.data.augment.enabled is True
    with pytest.raises(ConfigError, match="unknown recipe 'x'"):
        apply_recipe(load_config(None, ["recipe=x"]), "random")


def test_auto_takes_the_metric_recipe_with_many_training_identities():
    from siamkit.recipes import MIN_METRIC_IDENTITIES, RECIPES, apply_recipe

    cfg = load_config(None, [])
    reason = apply_recipe(cfg, "identity", MIN_METRIC_IDENTITIES)
    assert cfg.recipe == "metric" and f"{MIN_METRIC_IDENTITIES} training identities" in reason
    assert cfg.loss.name == "multi-similarity" and cfg.loss.miner is None and cfg.loss.params == {"base": 0.5}
    assert cfg.data.augment.enabled and cfg.data.augment.hflip == 0.0  # a mirrored glyph is another identity
    assert cfg.train.epochs == RECIPES["metric"]["train.epochs"] and cfg.model.backbone == "convnet"
    cfg = load_config(None, [])
    reason = apply_recipe(cfg, "identity", MIN_METRIC_IDENTITIES - 1)
    assert cfg.recipe == "descriptor" and "too few" in reason and cfg.train.epochs == 0
    cfg = load_config(None, ["loss.params={margin: 0.3}", "train.epochs=3"])  # the user's loss stays whole
    apply_recipe(cfg, "identity", 500)
    assert cfg.recipe == "metric" and cfg.loss.name == "contrastive" and cfg.loss.params == {"margin": 0.3}
    assert cfg.train.epochs == 3 and cfg.sampling.p == RECIPES["metric"]["sampling.p"]
    cfg = load_config(None, [])
    assert "random split" in apply_recipe(cfg, "random", 500) and cfg.recipe == "closed-set"


def test_saved_config_reproduces_the_resolved_recipe(open_run, tmp_path):
    from siamkit.config import dump_config, to_dict
    from siamkit.recipes import apply_recipe

    _, _, run_dir = open_run
    saved = load_config(run_dir / "config.yaml")
    assert saved.recipe == "open-set" and saved.loss.ssl_weight > 0 and saved.data.augment.enabled
    before = to_dict(saved)
    apply_recipe(saved, "identity")  # every key is explicit in a saved config: nothing changes
    assert to_dict(saved) == before
    dump_config(saved, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == saved


def test_no_head_embeds_the_pooled_features_and_fisher_losses_refuse_it():
    from siamkit.config import ModelConfig
    from siamkit.data.batch import LabelBatch
    from siamkit.losses import create_loss
    from siamkit.models.siamese import build_model

    net = build_model(ModelConfig(embedding_dim=0), 1).eval()
    x = torch.rand(4, 1, 28, 28)
    assert net.embedding_dim == net.backbone.num_features == 512
    assert torch.allclose(net.embed(x), torch.nn.functional.normalize(net.backbone(x), dim=1))
    with pytest.raises(ConfigError, match="nn.Linear"):
        create_loss("fdt", miner="batch-hard")(net, LabelBatch(x, torch.tensor([0, 0, 1, 1])))
