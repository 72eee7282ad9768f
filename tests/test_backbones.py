"""Key frame features without Spark: shapes, determinism, meaning (nearest neighbours share the planted concept),
the torch-free fallback, user-supplied torchvision weights, and what happens to bad images."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from kfr_spark import backbones as bb
from kfr_spark.config import FeaturesConfig

REPO = Path(__file__).resolve().parents[1]


def _own_concept_frame(concept: int, rng: np.random.Generator, size=(256, 144)) -> np.ndarray:
    """Fallback generator: concept = hue + pattern family (stripes / checkers / discs), randomly varied."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = min(w, h) * rng.uniform(0.12, 0.2)
    phase = rng.uniform(0, 2 * np.pi)
    kind = concept % 3
    if kind == 0:
        theta = np.deg2rad(concept * 25 + rng.uniform(-8, 8))
        p = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    elif kind == 1:
        p = ((np.floor(xx / period + phase) + np.floor(yy / period)) % 2).astype(np.float32)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        p = 0.5 + 0.5 * np.cos(2 * np.pi * np.hypot(xx - cx, yy - cy) / period + phase)
    hue = (concept * 15 + rng.uniform(-3, 3)) % 180
    fg = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    bg = cv2.cvtColor(np.uint8([[[hue, 150, 70]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    img = bg * (1 - p[..., None]) + fg * p[..., None] + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def concept_generator():
    """(concept_frame, number of concepts): the synthetic generator's when it is importable, else our own."""
    try:
        from kfr_spark.synth.lexicon import CONCEPTS
        from kfr_spark.synth.visual import concept_frame

        return concept_frame, len(CONCEPTS)
    except ImportError:
        return _own_concept_frame, 8


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def concept_frames():
    """4 key frames (320x180, like `kfr shots` writes) of every concept."""
    frame, n_concepts = concept_generator()
    rng = np.random.default_rng(2024)
    labels, images = [], []
    for concept in range(n_concepts):
        for _ in range(4):
            labels.append(concept)
            images.append(jpeg(frame(concept, rng, (320, 180))))
    return np.array(labels), images


@pytest.fixture(scope="module")
def lite0():
    return bb.build_extractor(FeaturesConfig(backbone="efficientnet_lite0"), device="cpu", threads=1)


@pytest.fixture(scope="module")
def lite0_vectors(lite0, concept_frames):
    vectors, rejects = bb.extract_images(lite0, concept_frames[1])
    assert rejects == []
    return vectors


def neighbour_purity(vectors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of each frame's k nearest neighbours (cosine, leave-one-out) that show the same concept."""
    unit = bb.l2_normalize(vectors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def test_lite0_vectors_are_1280d_unit_and_finite(lite0, lite0_vectors, concept_frames):
    assert lite0.spec.dim == 1280 and lite0.device == "cpu"
    assert lite0_vectors.shape == (len(concept_frames[1]), 1280) and lite0_vectors.dtype == np.float32
    assert np.isfinite(lite0_vectors).all()
    np.testing.assert_allclose(np.linalg.norm(lite0_vectors, axis=1), 1.0, rtol=1e-5)
    assert np.abs(lite0_vectors - lite0_vectors[0]).max() > 0.1  # not one constant vector


def test_lite0_is_deterministic_however_the_batch_is_made_up(lite0, lite0_vectors, concept_frames):
    images = concept_frames[1]
    order = np.random.default_rng(0).permutation(len(images))[:11]  # other neighbours, other positions
    again, _ = bb.extract_images(lite0, [images[i] for i in order])
    assert np.array_equal(again, lite0_vectors[order])  # bit for bit


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "handcrafted"])
def test_nearest_neighbours_share_the_planted_concept(backbone, lite0_vectors, concept_frames):
    labels, images = concept_frames
    if backbone == "efficientnet_lite0":
        vectors = lite0_vectors
    else:
        vectors, _ = bb.extract_images(bb.build_extractor(FeaturesConfig(backbone="handcrafted")), images)
    n_concepts = len(set(labels.tolist()))
    chance = (len(labels) / n_concepts - 1) / (len(labels) - 1)
    purity1, purity3 = neighbour_purity(vectors, labels, 1), neighbour_purity(vectors, labels, 3)
    print(f"{backbone}: {n_concepts} concepts, purity@1 {purity1:.3f}, purity@3 {purity3:.3f}, chance {chance:.3f}")
    assert purity1 >= 0.8 and purity3 >= 0.7
    assert purity3 > 6 * chance


def test_preprocessing_follows_each_backbones_training():
    lite = bb.backbone_spec(FeaturesConfig(backbone="efficientnet_lite0"))
    assert (lite.input_size, lite.mean, lite.std) == (224, (127.0,) * 3, (128.0,) * 3)
    resnet = bb.backbone_spec(FeaturesConfig(backbone="torchvision", torchvision_arch="resnet50"))
    assert resnet.input_size == 224 and np.allclose(resnet.mean, [123.675, 116.28, 103.53])
    assert resnet.dim == 2048
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[:, :, 2] = 255  # red in BGR
    frame[:, :40] = 0  # black left edge: cropped away by center_crop, kept by full
    crop = bb.to_model_input(frame, 224, "center_crop")
    full = bb.to_model_input(frame, 224, "full")
    assert crop.shape == full.shape == (224, 224, 3)
    assert tuple(crop[112, 112]) == (255, 0, 0)  # RGB now
    assert crop[:, 0].max() == 255 and full[:, 0].max() == 0


def test_params_hash_tracks_what_changes_vectors():
    base = FeaturesConfig()
    assert bb.params_hash(base) == bb.params_hash(FeaturesConfig(batch_size=3, cpu_threads=2, device="cpu"))
    assert bb.params_hash(base) != bb.params_hash(FeaturesConfig(resize="full"))
    assert bb.params_hash(base) != bb.params_hash(FeaturesConfig(l2_normalize=False))
    assert bb.params_hash(base) != bb.params_hash(FeaturesConfig(backbone="handcrafted"))


def test_handcrafted_fallback_never_imports_torch(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import cv2, numpy as np, pandas as pd
        from kfr_spark import backbones as bb
        from kfr_spark.config import FeaturesConfig
        from kfr_spark.features import infer_partition, plan_inference

        cfg = FeaturesConfig(backbone="handcrafted")
        images = [cv2.imencode(".jpg", np.full((90, 160, 3), c, np.uint8))[1].tobytes() for c in (30, 120, 220)]
        vectors, rejects = bb.extract_images(bb.build_extractor(cfg), images + [b"junk"])
        assert vectors.shape == (4, bb.HANDCRAFTED_DIM) and [r[1] for r in rejects] == ["corrupt_image"]
        # the Spark worker function, fed a pandas batch directly
        frame = pd.DataFrame({"video_id": ["v"] * 3, "shot_idx": [0, 1, 2], "image_sha1": ["a", "b", "c"],
                              "keyframe_jpeg": images})
        out = pd.concat(infer_partition(cfg, plan_inference(cfg, cores=2))(iter([frame])))
        assert list(out["kind"]) == ["vector"] * 3 and len(out["features"][0]) == bb.HANDCRAFTED_DIM
        assert "torch" not in sys.modules, "the handcrafted path imported torch"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


# --- torchvision-style weights from a file the user supplies ------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    import torch

    from kfr_spark import torch_archs

    torch.manual_seed(0)
    model = torch_archs.build("resnet18")
    for module in model.modules():  # non-trivial BatchNorm statistics, so a load that is skipped shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_torchvision_resnet_loads_a_user_state_dict(resnet18_file, concept_frames):
    import torch

    path, reference = resnet18_file
    cfg = FeaturesConfig(backbone="torchvision", torchvision_arch="resnet18", weights_path=path, l2_normalize=False,
                         batch_size=3)
    bb.check_weights(cfg)
    extractor = bb.build_extractor(cfg, device="cpu", threads=1)
    images = concept_frames[1][:3]
    vectors, rejects = bb.extract_images(extractor, images)
    assert rejects == [] and vectors.shape == (3, 512) and extractor.spec.name == "resnet18"
    # the same network, by hand: the file's weights were really used
    batch = np.stack([bb.to_model_input(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), 224,
                                        "center_crop", cv2.INTER_LINEAR) for b in images]).astype(np.float32)
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2) - torch.tensor(bb.IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(bb.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = reference.embed(x.contiguous()).numpy()
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)


def test_torchvision_weights_problems_are_clear_config_errors(resnet18_file, tmp_path):
    import torch

    path, model = resnet18_file
    with pytest.raises(bb.WeightsError, match="file not found"):
        bb.check_weights(FeaturesConfig(backbone="torchvision", weights_path=tmp_path / "missing.pth"))
    with pytest.raises(bb.WeightsError, match="weights_path must name"):
        bb.check_weights(FeaturesConfig(backbone="torchvision"))
    with pytest.raises(bb.WeightsError, match="does not hold resnet50 weights|resnet50 expects"):
        bb.check_weights(FeaturesConfig(backbone="torchvision", torchvision_arch="resnet50", weights_path=path))
    pickled_model = tmp_path / "whole-model.pth"
    torch.save(model, pickled_model)  # a pickled module, not a state_dict: refused by weights_only
    with pytest.raises(bb.WeightsError, match="weights_only"):
        bb.check_weights(FeaturesConfig(backbone="torchvision", torchvision_arch="resnet18", weights_path=pickled_model))


# --- bad input ----------------------------------------------------------------------------------------------


def _with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size."""
    i = 2
    while True:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC2):
            patched = bytearray(data)
            patched[i + 5:i + 7] = height.to_bytes(2, "big")
            patched[i + 7:i + 9] = width.to_bytes(2, "big")
            return bytes(patched)
        i += 2 + length


def test_bad_images_become_reasons_and_the_batch_completes():
    rng = np.random.default_rng(3)
    good = jpeg(rng.integers(0, 255, (180, 320, 3), dtype=np.uint8))
    assert bb.image_dimensions(good) == ("jpeg", 320, 180)
    png = cv2.imencode(".png", np.full((40, 60, 3), 90, np.uint8))[1].tobytes()
    cases = {
        "empty": (b"", "empty_image"),
        "garbage": (b"\x00\x01not an image at all" * 10, "corrupt_image"),
        "truncated": (good[: len(good) // 2], "corrupt_image"),
        "huge": (_with_declared_size(good, 60000, 60000), "bad_size"),
        "tiny": (jpeg(np.zeros((4, 4, 3), np.uint8)), "bad_size"),
        "too_many_bytes": (good, "bad_size"),
    }
    limits = bb.ImageLimits(max_bytes=len(good) + 10, min_side=16, max_side=8192)
    for name, (data, reason) in cases.items():
        use = bb.ImageLimits(max_bytes=100) if name == "too_many_bytes" else limits
        decoded = bb.decode_keyframe(data, use)
        assert (decoded.image, decoded.reason) == (None, reason), name
        assert decoded.detail, name
    assert bb.decode_keyframe(png, limits).image.shape == (40, 60, 3)

    extractor = bb.build_extractor(FeaturesConfig(backbone="handcrafted", batch_size=2))
    inputs = [good, b"", good, cases["truncated"][0], cases["huge"][0], png]
    vectors, rejects = bb.extract_images(extractor, inputs, limits)
    assert [(i, reason) for i, reason, _ in rejects] == [(1, "empty_image"), (3, "corrupt_image"), (4, "bad_size")]
    assert np.isfinite(vectors[[0, 2, 5]]).all() and np.isnan(vectors[[1, 3, 4]]).all()
    assert np.array_equal(vectors[0], vectors[2])
