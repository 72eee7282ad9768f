"""Readable summaries of the lakehouse and the ledger for people at a terminal.

Everything printed here is an aggregate computed by Spark (counts, group-bys, the last N ledger rows), never
the data itself, so it stays cheap however large the tables grow.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_TSC_REJECTS, TABLES, Lakehouse
from kfr_spark.config import KfrConfig


def lakehouse_summary(spark: SparkSession, lake: Lakehouse) -> list[tuple[str, int | None, int | None, str]]:
    """(table, rows, version, path) for every catalog table; rows/version None when not created yet."""
    out = []
    for name in sorted(TABLES):
        version = delta_io.current_version(spark, lake, name)
        rows = delta_io.read_table(spark, lake, name).count() if version is not None else None
        out.append((name, rows, version, lake.path(name)))
    return out


def rejects_by_reason(spark: SparkSession, lake: Lakehouse) -> dict[str, int]:
    if not delta_io.table_exists(spark, lake, BRONZE_TSC_REJECTS.name):
        return {}
    frame = delta_io.read_table(spark, lake, BRONZE_TSC_REJECTS.name)
    rows = frame.groupBy("reason").agg(F.count("*").alias("n")).orderBy(F.desc("n"), "reason").collect()
    return {row["reason"]: int(row["n"]) for row in rows}


def print_lakehouse_summary(spark: SparkSession, lake: Lakehouse) -> None:
    print(f"lakehouse: {lake.root}")
    print(f"  {'table':<22} {'rows':>12} {'version':>8}  path")
    for name, rows, version, path in lakehouse_summary(spark, lake):
        shown_rows = f"{rows:,}" if rows is not None else "-"
        shown_version = str(version) if version is not None else "-"
        print(f"  {name:<22} {shown_rows:>12} {shown_version:>8}  {path}")
    reasons = rejects_by_reason(spark, lake)
    if reasons:
        print("rejects by reason:")
        for reason, n in reasons.items():
            print(f"  {reason:<22} {n:>12,}")


def add_arguments(parser) -> None:
    pass


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-tables")
    print_lakehouse_summary(spark, Lakehouse(config.lakehouse.root))
    return 0
