"""Writing to Delta tables so that a rerun changes nothing.

Four write shapes cover every job: an insert-only MERGE on the natural key (append-style facts such as comments:
a row already there is left alone), an upsert MERGE (derived rows that a rerun recomputes) and a synchronising
MERGE (tables recomputed whole) — and, for outputs published per run date, a partition overwrite that replaces
exactly one partition in one commit (`replace_partition`). Into an empty table each is a plain append, which writes the same rows without
MERGE's join of source and target. All report the numbers Delta itself recorded for the commit, which go into
the job-run ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import MapType, StructField

from kfr_spark.catalog import Lakehouse, TableSpec, spec


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int
    rows_inserted: int
    rows_updated: int = 0
    rows_deleted: int = 0


def ensure_table(spark: SparkSession, lake: Lakehouse, name: str) -> DeltaTable:
    """Create the table with its catalog schema and partitioning if it is not there yet."""
    table = spec(name)
    path = lake.path(name)
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(table.schema)
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    if table.description:
        builder = builder.comment(table.description)
    if table.stats_columns:
        builder = builder.property("delta.dataSkippingStatsColumns", ",".join(table.stats_columns))
    return builder.execute()


def table_exists(spark: SparkSession, lake: Lakehouse, name: str) -> bool:
    return DeltaTable.isDeltaTable(spark, lake.path(name))


def current_version(spark: SparkSession, lake: Lakehouse, name: str) -> int | None:
    if not table_exists(spark, lake, name):
        return None
    return int(DeltaTable.forPath(spark, lake.path(name)).history(1).collect()[0]["version"])


def read_table(spark: SparkSession, lake: Lakehouse, name: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(lake.path(name))


def _conform(df: DataFrame, table: TableSpec) -> DataFrame:
    """Select the catalog's columns in order, cast to its types: a schema drift fails here, not in MERGE."""
    from pyspark.sql import functions as F

    missing = [f.name for f in table.schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"{table.name}: DataFrame lacks columns {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in table.schema.fields])


def _last_commit(delta: DeltaTable, name: str, version_before: int) -> WriteResult:
    """What the write did, from Delta's own commit metrics. A MERGE with nothing to do commits nothing."""
    row = delta.history(1).collect()[0]
    if int(row["version"]) == version_before:
        return WriteResult(table=name, version=version_before, rows_inserted=0)
    metrics = row["operationMetrics"] or {}

    def metric(key: str) -> int:
        return int(metrics.get(key, 0) or 0)

    # A MERGE reports inserted rows; a plain write (no such metric) reports what it wrote.
    inserted = metric("numTargetRowsInserted") if "numTargetRowsInserted" in metrics else metric("numOutputRows")
    return WriteResult(
        table=name,
        version=int(row["version"]),
        rows_inserted=inserted,
        rows_updated=metric("numTargetRowsUpdated"),
        rows_deleted=metric("numTargetRowsDeleted"),
    )


def _is_empty(delta: DeltaTable) -> bool:
    """No data files in the current snapshot (from the table's metadata, not a scan)."""
    return int(delta.detail().select("numFiles").first()[0] or 0) == 0


def _append(delta: DeltaTable, lake: Lakehouse, table: TableSpec, df: DataFrame, before: int) -> WriteResult:
    """Into an empty table every MERGE is an insert of the whole source: write it without MERGE's join."""
    _conform(df, table).write.format("delta").mode("append").save(lake.path(table.name))
    return _last_commit(delta, table.name, before)


def merge_insert_new(spark: SparkSession, lake: Lakehouse, name: str, df: DataFrame) -> WriteResult:
    """Insert the rows whose natural key is not in the table yet; leave existing rows untouched.

    The source must not repeat a key (callers deduplicate first): Delta would insert both copies.
    """
    return _merge(spark, lake, name, df, update_changed=False, delete_missing=False)


def _differs(column: StructField) -> str:
    """SQL that is true when target and source differ in this column (maps have no equality: compare JSON)."""
    name = f"`{column.name}`"
    if isinstance(column.dataType, MapType):
        return f"NOT (to_json(t.{name}) <=> to_json(s.{name}))"
    return f"NOT (t.{name} <=> s.{name})"


def merge_upsert(spark: SparkSession, lake: Lakehouse, name: str, df: DataFrame) -> WriteResult:
    """Insert new keys and overwrite rows whose key exists but whose content changed."""
    return _merge(spark, lake, name, df, update_changed=True, delete_missing=False)


def merge_sync(spark: SparkSession, lake: Lakehouse, name: str, df: DataFrame) -> WriteResult:
    """Make the table hold exactly `df`: insert new keys, update changed rows, delete keys `df` no longer has.

    For tables recomputed whole from their inputs (training sets): rows that did not change are not rewritten,
    so a rerun on the same inputs changes no row, and the ledger's counts say what the new inputs changed. (Delta
    still records a commit for a MERGE with a not-matched-by-source clause even when it changes nothing.)
    """
    return _merge(spark, lake, name, df, update_changed=True, delete_missing=True)


def _merge(spark: SparkSession, lake: Lakehouse, name: str, df: DataFrame, *, update_changed: bool,
           delete_missing: bool) -> WriteResult:
    """The one MERGE on the natural key behind the three write shapes (a plain append into an empty table)."""
    table = spec(name)
    delta = ensure_table(spark, lake, name)
    before = int(delta.history(1).collect()[0]["version"])
    if _is_empty(delta):
        return _append(delta, lake, table, df, before)
    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in table.keys)
    merge = delta.alias("t").merge(_conform(df, table).alias("s"), condition)
    if update_changed:
        changed = " OR ".join(
            _differs(f) for f in table.schema.fields
            if f.name not in table.keys and f.name not in table.lineage_columns
        ) or "false"
        merge = merge.whenMatchedUpdateAll(condition=changed)
    merge = merge.whenNotMatchedInsertAll()
    if delete_missing:
        merge = merge.whenNotMatchedBySourceDelete()
    merge.execute()
    return _last_commit(delta, name, before)


def replace_partition(spark: SparkSession, lake: Lakehouse, name: str, df: DataFrame, values: dict[str, object]
                      ) -> WriteResult:
    """Replace exactly the partition `values` (e.g. {"run_date": date(2026, 12, 1)}) with `df`, atomically: a
    reader sees the old partition or the new one, and every other partition is untouched. `df` must hold only rows
    of that partition (Delta checks it and refuses the write otherwise)."""
    import datetime

    table = spec(name)
    if set(values) != set(table.partition_by):
        raise ValueError(f"{name} is partitioned by {table.partition_by}, not {tuple(values)}")

    def literal(v: object) -> str:
        if isinstance(v, (datetime.date, datetime.datetime)):
            return f"'{v.isoformat()}'"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return str(v)

    delta = ensure_table(spark, lake, name)
    before = int(delta.history(1).collect()[0]["version"])
    where = " AND ".join(f"`{k}` = {literal(v)}" for k, v in values.items())
    (_conform(df, table).write.format("delta").mode("overwrite").option("replaceWhere", where)
     .save(lake.path(name)))
    return _last_commit(delta, name, before)
