"""The one place a SparkSession is built.

Every job gets the same Delta-enabled session with defaults that suit a small machine (shuffle partitions
sized to the cores, Arrow on, UTC, UI off unless asked). Under `spark-submit` the master, memory and jars
come from spark-submit and are not overridden here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from kfr_spark import jars, jvm_udfs
from kfr_spark.config import KfrConfig

log = logging.getLogger(__name__)

_DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def under_spark_submit() -> bool:
    """spark-submit starts the Python driver with a gateway it already configured."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def local_cores(master: str) -> int:
    """Cores a `local[N]` / `local[*]` master will use (the machine's count for `*`)."""
    inside = master.partition("[")[2].partition("]")[0].split(",")[0]
    if master.startswith("local") and inside.isdigit():
        return int(inside)
    return os.cpu_count() or 2


def build_session(config: KfrConfig, app_name: str | None = None) -> SparkSession:
    spark_cfg = config.spark
    builder = SparkSession.builder.appName(app_name or spark_cfg.app_name)
    settings: dict[str, str] = dict(_DELTA_CONF)
    settings.update(
        {
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": str(spark_cfg.ui_enabled).lower(),
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.adaptive.enabled": "true",
            "spark.python.worker.reuse": "true",
            # Small local tables: Delta's default of 50 snapshot partitions is pure overhead here.
            "spark.databricks.delta.snapshotPartitions": "4",
            "spark.databricks.delta.schema.autoMerge.enabled": "false",
            "spark.sql.warehouse.dir": str(config.lakehouse.root / "_warehouse"),
        }
    )
    if not under_spark_submit():
        if spark_cfg.master.startswith("local"):
            # One machine: bind to loopback instead of guessing an interface (and warning about it).
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers must run this interpreter (the project venv), not whatever `python3` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(spark_cfg.master)
        settings["spark.driver.memory"] = spark_cfg.driver_memory
        cores = local_cores(spark_cfg.master)
        settings["spark.sql.shuffle.partitions"] = str(spark_cfg.shuffle_partitions or 2 * cores)
        settings["spark.default.parallelism"] = str(cores)
        settings["spark.driver.extraJavaOptions"] = "-Dderby.system.home=" + str(config.lakehouse.root / "_derby")
    elif spark_cfg.shuffle_partitions:
        settings["spark.sql.shuffle.partitions"] = str(spark_cfg.shuffle_partitions)
    if spark_cfg.delta_jars == "cache":
        settings["spark.jars"] = ",".join(str(p) for p in jars.delta_jars())
    udf_jar = jvm_udfs.built_jar()
    if udf_jar is not None and not under_spark_submit():  # under spark-submit, --jars ships it (see jvm_udfs)
        settings["spark.jars"] = ",".join(filter(None, [settings.get("spark.jars"), str(udf_jar)]))
    settings.update(spark_cfg.conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    log.info("spark %s session %s on %s", spark.version, spark.sparkContext.applicationId, spark.sparkContext.master)
    return spark


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Set SQL settings for one step of a job and put the previous values back after it, even on failure.

    Steps tune Arrow batch sizes and file packing to their rows (a batch of whole files, a batch of JPEGs);
    the next step, or the next job in the same session, must not inherit them.
    """
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
