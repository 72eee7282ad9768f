"""Experiment tracking: MLflow, behind this one module.

Every training run (one run key: model, settings, input Delta versions) is one MLflow run in a local store —
parameters, per-epoch losses, the input versions as tags, `model.pt` and `training.json` as artifacts — and every
evaluation of its model adds its metrics to that same run, so a data scientist opens `mlflow ui
--backend-store-uri <uri>` and compares models there. A resumed or repeated training finds its MLflow run by the
run key and adds only the epochs it has not logged yet: a rerun logs nothing twice.

The store defaults to SQLite under the lakehouse (`<root>/_artifacts/mlflow/mlflow.db`, artifacts beside it), so
it travels with the tables. Tracking is best effort: a failing store is logged as a warning and the job goes on,
because `ops.model_runs` (Delta) holds the same record and is the source of truth. Telemetry is switched off:
nothing leaves the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kfr_spark.config import KfrConfig

log = logging.getLogger(__name__)

RUN_KEY_TAG = "kfr.run_key"
MODEL_PATH_TAG = "kfr.model_path"


def tracking_uri(config: KfrConfig) -> str:
    if config.tracking.uri:
        return config.tracking.uri
    store = Path(config.lakehouse.root).resolve() / "_artifacts" / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _client(config: KfrConfig):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(config)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        artifacts = None
        if uri.startswith("sqlite:///"):
            artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        experiment_id = client.create_experiment(config.tracking.experiment, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    return client, experiment_id


def _find_run(client, experiment_id: str, tag: str, value: str):
    found = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return found[0] if found else None


def _flat(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def log_training(config: KfrConfig, *, model: str, run_key: str, params: Mapping[str, Any],
                 history: list[dict[str, float]], input_versions: Mapping[str, int], model_path: Path,
                 artifacts: Iterable[Path] = (), finished: bool, job_run_id: str) -> str | None:
    """Record one training in MLflow; returns the MLflow run id (None when tracking is off or failed). The model
    file and `artifacts` are attached once the training has finished."""
    if not config.tracking.enabled:
        return None
    try:
        client, experiment_id = _client(config)
        run = _find_run(client, experiment_id, RUN_KEY_TAG, run_key)
        if run is None:
            run = client.create_run(experiment_id, run_name=f"{model}-{run_key}", tags={
                RUN_KEY_TAG: run_key, "kfr.model": model,
                **{f"kfr.input.{name}": str(v) for name, v in input_versions.items()}})
            for key, value in _flat("", params):
                client.log_param(run.info.run_id, key[:250], str(value)[:6000])
        run_id = run.info.run_id
        logged = {m.step for m in client.get_metric_history(run_id, "train_loss")}
        for record in history:
            if int(record["epoch"]) in logged:
                continue
            for name in ("train_loss", "val_loss", "val_ndcg", "seconds", "examples"):
                if name in record:
                    client.log_metric(run_id, name, float(record[name]), step=int(record["epoch"]))
        client.set_tag(run_id, "kfr.job_run_id", job_run_id)
        if finished:
            for path in (model_path, *artifacts):
                if Path(path).is_file():
                    client.log_artifact(run_id, str(path))
            client.set_tag(run_id, MODEL_PATH_TAG, str(Path(model_path).resolve()))
            client.set_terminated(run_id, "FINISHED")
        return run_id
    except Exception as e:  # noqa: BLE001 — tracking must never fail a training that succeeded
        log.warning("tracking: MLflow could not record %s run %s (%s: %s); ops.model_runs has it",
                    model, run_key, type(e).__name__, e)
        return None


def log_evaluation(config: KfrConfig, model_path: Path, eval_id: str, metrics: Mapping[str, float]) -> str | None:
    """Add an evaluation's metrics (`eval.<metric>@<k>`) to the MLflow run that trained `model_path`."""
    if not config.tracking.enabled:
        return None
    try:
        client, experiment_id = _client(config)
        run = _find_run(client, experiment_id, MODEL_PATH_TAG, str(Path(model_path).resolve()))
        if run is None:
            log.info("tracking: no MLflow run trained %s; evaluation %s is in gold.eval_metrics only", model_path,
                     eval_id)
            return None
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, f"eval.{name.replace('@', '_at_')}", float(value))
        client.set_tag(run.info.run_id, "kfr.last_eval_id", eval_id)
        return run.info.run_id
    except Exception as e:  # noqa: BLE001
        log.warning("tracking: MLflow could not record evaluation %s (%s: %s)", eval_id, type(e).__name__, e)
        return None
