"""JVM-side UDFs, built from the Java sources in `kfr_spark/jvm/` into one small jar at set-up.

Only what a Python UDF would do badly lives here: work that needs no Python but would otherwise cross to a Python
worker and back. Today that is one function, the vocabulary lookup of the tokenize job's write (`TokenIds`).

The jar is compiled once per (sources, Spark version) with `javac` against pyspark's own jars and cached beside
the Delta jars (`python -m kfr_spark.jvm_udfs build`, run by `make setup`). It is optional: a machine with a Java
runtime but no compiler gets no jar, the session leaves it out, and the jobs use their Python path. On a cluster,
`--jars "$(python -m kfr_spark.jars show --csv)"` ships it with Delta's jars.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from kfr_spark.jars import cache_dir

SOURCES = Path(__file__).resolve().parent / "jvm"
TOKEN_IDS_CLASS = "kfr.spark.TokenIds"


def _fingerprint() -> str:
    digest = hashlib.sha256(version("pyspark").encode())
    for source in sorted(SOURCES.glob("*.java")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def jar_path() -> Path:
    return cache_dir() / "jars" / f"kfr-udfs-{_fingerprint()}.jar"


def built_jar() -> Path | None:
    """The jar for these sources and this Spark, if set-up built it."""
    path = jar_path()
    return path if path.is_file() else None


def build() -> Path:
    """Compile the sources against pyspark's jars into the cached jar (atomically); a no-op when it is there."""
    path = jar_path()
    if path.is_file():
        return path
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError("javac not found: install a JDK (e.g. openjdk-17-jdk-headless) to build the JVM UDFs")
    import pyspark

    classpath = str(Path(pyspark.__file__).resolve().parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp) / "classes"
        subprocess.run([javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", str(classes),
                        *map(str, sorted(SOURCES.glob("*.java")))], check=True)
        partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: kfr_spark.jvm_udfs\n\n")
            for cls in sorted(classes.rglob("*.class")):
                jar.write(cls, cls.relative_to(classes).as_posix())
        partial.replace(path)
    for stale in path.parent.glob("kfr-udfs-*.jar"):  # jars of earlier sources or Spark versions
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def loaded(spark, class_name: str = TOKEN_IDS_CLASS) -> bool:
    """Whether the session's JVM can load the class (the jar is on its classpath)."""
    try:
        spark._jvm.java.lang.Class.forName(class_name, True, spark._jvm.Thread.currentThread().getContextClassLoader())
    except Exception:  # noqa: BLE001 - py4j raises its own error type for a ClassNotFoundException
        return False
    return True


class TokenIdsUdf:
    """`tokens` → vocabulary ids in the JVM, for one vocabulary ({token: id}); unknown tokens get `unknown_id`.

    Use `column(name)` in a select, and `unpersist()` when the job is done with it (the vocabulary is a broadcast).
    """

    def __init__(self, spark, vocabulary: dict[str, int], unknown_id: int) -> None:
        if any("\0" in token for token in vocabulary):
            raise ValueError("a vocabulary token holds a NUL character")  # the separator of the payload below
        payload = "\0".join(f"{token}\0{i}" for token, i in vocabulary.items()).encode("utf-8")
        self._udf = spark._jvm.kfr.spark.TokenIds.create(spark._jsparkSession, payload, unknown_id)
        name_digest = hashlib.sha256(payload + str(unknown_id).encode()).hexdigest()[:12]
        self.name = f"kfr_token_ids_{name_digest}"
        from pyspark.sql.types import ArrayType, IntegerType

        java_type = spark._jsparkSession.parseDataType(ArrayType(IntegerType(), False).json())
        spark._jsparkSession.udf().register(self.name, self._udf, java_type)

    def column(self, tokens: str = "tokens"):
        from pyspark.sql import functions as F

        return F.call_udf(self.name, F.col(tokens))

    def unpersist(self) -> None:
        self._udf.unpersist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfr_spark.jvm_udfs", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "show"])
    args = parser.parse_args(argv)
    if args.action == "build":
        try:
            path = build()
        except (RuntimeError, subprocess.CalledProcessError) as error:
            print(f"[jvm-udfs] not built ({error}); the jobs will use their Python path", file=sys.stderr)
            return 0
        print(f"[jvm-udfs] {path}", file=sys.stderr)
        return 0
    path = built_jar()
    print(path if path else f"not built: run `python -m kfr_spark.jvm_udfs build` ({jar_path()})")
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
