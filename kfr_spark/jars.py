"""The Delta Lake jars, resolved once and then used offline.

`configure_spark_with_delta_pip` makes every session resolve `io.delta:delta-spark` through Ivy at start-up,
which needs the network each time a cache is cold and fails on an offline cluster node. We resolve the jars
once at set-up (Ivy first, Maven as a fallback), copy them into a versioned folder of the cache, and give
Spark plain `spark.jars` paths from then on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

SCALA_BINARY = "2.13"


def cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR", Path.home() / ".cache" / "kfr-spark"))


def delta_version() -> str:
    return version("delta-spark")


def delta_coordinate() -> str:
    return f"io.delta:delta-spark_{SCALA_BINARY}:{delta_version()}"


def jar_dir() -> Path:
    return cache_dir() / "jars" / f"delta-spark_{SCALA_BINARY}-{delta_version()}"


def delta_jars() -> list[Path]:
    """The cached jars, or a clear error telling how to get them."""
    folder = jar_dir()
    jars = sorted(folder.glob("*.jar"))
    if not (folder / ".complete").exists() or not jars:
        raise RuntimeError(
            f"Delta jars for {delta_coordinate()} are not in {folder}. "
            "Run `make setup` (or `python -m kfr_spark.jars fetch`) once with network access."
        )
    return jars


def _fetch_with_ivy(target: Path) -> None:
    """Let Spark's own Ivy resolve the coordinate into a private Ivy home, then copy the jars out."""
    from pyspark.sql import SparkSession

    ivy_home = cache_dir() / "ivy"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("kfr-fetch-delta-jars")
        .config("spark.jars.packages", delta_coordinate())
        .config("spark.jars.ivy", str(ivy_home))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        resolved = [p for p in spark.sparkContext.getConf().get("spark.jars", "").split(",") if p]
    finally:
        spark.stop()
    if not resolved:
        raise RuntimeError("Ivy resolved no jars")
    for uri in resolved:
        shutil.copy2(uri.removeprefix("file:").removeprefix("//"), target)


def _fetch_with_maven(target: Path) -> None:
    """Fallback where Ivy cannot reach the repository but Maven (with its own settings) can."""
    group, artifact, ver = delta_coordinate().split(":")
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>kfr</groupId><artifactId>delta-jars</artifactId><version>1</version>
<dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>
<version>{ver}</version></dependency></dependencies></project>"""
        )
        subprocess.run(
            ["mvn", "-q", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={target}"],
            check=True,
        )


def fetch() -> list[Path]:
    folder = jar_dir()
    if (folder / ".complete").exists():
        return delta_jars()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _fetch_with_ivy(tmp)
    except Exception as ivy_error:  # noqa: BLE001 - any Ivy failure means: try Maven
        print(f"[jars] Ivy could not resolve {delta_coordinate()} ({ivy_error}); trying Maven", file=sys.stderr)
        shutil.rmtree(tmp)
        tmp.mkdir()
        _fetch_with_maven(tmp)
    (tmp / ".complete").write_text(delta_coordinate() + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return delta_jars()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfr_spark.jars", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch", "show"])
    parser.add_argument("--csv", action="store_true", help="print the jar paths comma-separated (for --jars)")
    args = parser.parse_args(argv)
    jars = fetch() if args.action == "fetch" else delta_jars()
    if args.csv:
        from kfr_spark.jvm_udfs import built_jar  # the project's own UDF jar ships with Delta's to a cluster

        udfs = built_jar()
        print(",".join(str(p) for p in [*jars, *([udfs] if udfs else [])]))
    else:
        print(f"[jars] {delta_coordinate()}: {len(jars)} jars in {jar_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
