"""Jobs on a real standalone cluster keep their promises when machines die: a worker killed while ingest or tokenize
runs costs a retry, not a comment; a driver killed in the middle of a Delta write leaves the table at its previous
version, and the rerun lands every row exactly once.

The jobs run as `spark-submit jobs/<stage>.py` processes against a master and two one-core workers on loopback
(`kfr_spark.standalone`), the way a platform team runs them. Each fault is placed by watching the running job (its
log, the driver's REST API, the table's folder), and each test first proves the fault landed mid-job — an executor
was lost, data files were written but not committed — so none can pass by killing too early or too late.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from kfr_spark import delta_io, jars
from kfr_spark.catalog import BRONZE_TSC, SILVER_TSC_TOKENS, Lakehouse
from kfr_spark.standalone import StandaloneCluster, free_port, kill_tree
from trials import TRIAL_IDS, TRIALS, kill_point, tally  # noqa: F401  (tally is a fixture)

pytestmark = [pytest.mark.spark, pytest.mark.resilience, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
N_COMMENTS = 30_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, cores_per_worker=1,
                           worker_memory="3g") as running:
        yield running


@pytest.fixture(scope="module")
def danmaku(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([str(VENV_BIN / "kfr"), "synth", "--out", str(out), "--comments", str(N_COMMENTS),
                    "--videos", "12", "--users", "500", "--workers", "1"], check=True, capture_output=True)
    return out / "danmaku"


class Job:
    """One `spark-submit jobs/<stage>.py` driver process, its log, and its REST API."""

    def __init__(self, stage: str, root: Path, danmaku: Path, log: Path, master: str | None = None,
                 cluster_conf: dict[str, str] | None = None) -> None:
        self.log, self.ui_port = log, free_port()
        conf = {**(cluster_conf or {}), "spark.ui.port": str(self.ui_port), "spark.driver.memory": "2g"}
        cmd = [str(VENV_BIN / "spark-submit"), "--master", master or "local[2]",
               *[x for k, v in conf.items() if k != "spark.master" for x in ("--conf", f"{k}={v}")],
               "--jars", ",".join(str(p) for p in jars.delta_jars()), f"jobs/{stage}.py",
               "--set", f"lakehouse.root={root}", "--set", f"ingest.input_paths=['{danmaku}']",
               "--set", "spark.ui_enabled=true", "--set", "spark.log_level=WARN"]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        self.out = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.text()):
            assert self.proc.poll() is None, f"the job ended before {pattern!r}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} after {timeout_s} s"
            time.sleep(0.2)

    def active_tasks(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/api/v1/applications", timeout=2) as r:
                app = json.load(r)[0]["id"]
            url = f"http://127.0.0.1:{self.ui_port}/api/v1/applications/{app}/stages?status=active"
            with urllib.request.urlopen(url, timeout=2) as r:
                return sum(stage["numActiveTasks"] for stage in json.load(r))
        except (OSError, IndexError, KeyError, ValueError):
            return 0

    def wait_for_running_tasks(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.active_tasks() == 0:
            assert self.proc.poll() is None, f"the job ended with no task seen running:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no running task after {timeout_s} s"
            time.sleep(0.1)

    def wait(self, timeout_s: float = 900) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.out.close()

    def kill(self) -> None:
        """SIGKILL the driver and everything it started (its JVM, its Python workers), as a preempted node does."""
        kill_tree(self.proc.pid, signal.SIGKILL)
        self.wait()


def keys_and_rows(spark, lake: Lakehouse, table) -> tuple[int, int]:
    df = delta_io.read_table(spark, lake, table.name)
    return df.count(), df.select(*table.keys).distinct().count()


@pytest.mark.parametrize("trial", range(TRIALS), ids=TRIAL_IDS)
def test_a_worker_killed_while_ingest_and_tokenize_run_costs_retries_not_rows(spark, cluster, danmaku, tmp_path,
                                                                              tally, trial):  # noqa: F811  (a fixture)
    lake = Lakehouse(tmp_path / "lakehouse")
    place = kill_point("worker", trial)
    figures = {}
    for stage, table, trigger in (("ingest", BRONZE_TSC, r"ingest: \d+ files"),
                                  ("tokenize", SILVER_TSC_TOKENS, r"job tokenize run \w+ started")):
        job = Job(stage, lake.root, danmaku, tmp_path / f"{stage}.log", cluster.master_url, cluster.spark_conf("2g"))
        job.wait_for_line(trigger)
        job.wait_for_running_tasks()
        # The kill point: a random moment while tasks run (never after they stopped), on a random worker.
        delay, victim = place.uniform(0.0, 2.0), place.randrange(2)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and job.active_tasks() > 0:
            time.sleep(0.05)
        killed = cluster.kill_worker(victim)  # the worker and its executor die at once; a fresh one takes the slot
        assert killed, f"worker {victim} had no executor to kill {delay:.2f} s in: the fault would miss the job"
        assert job.wait() == 0, job.text()[-3000:]
        assert re.search(r"Lost executor|ExecutorLostFailure|Lost task", job.text()), "no task was lost"
        rows, keys = keys_and_rows(spark, lake, table)
        assert rows == keys == N_COMMENTS  # every comment exactly once
        figures[stage] = (rows, rows - keys, N_COMMENTS - keys, f"worker {victim} at +{delay:.2f}s")
        cluster.wait_for_workers(2)
    for stage, (rows, dups, lost, where) in figures.items():
        tally.trial(f"worker killed during {stage}", trial, rows_checked=rows, duplicates=dups, lost_rows=lost,
                    kill_point=where)


@pytest.mark.parametrize("trial", range(TRIALS), ids=TRIAL_IDS)
def test_a_driver_killed_mid_delta_write_leaves_the_previous_version_and_the_rerun_is_exact(spark, danmaku,
                                                                                            tmp_path, tally, trial):  # noqa: F811  (a fixture)
    lake = Lakehouse(tmp_path / "lakehouse")
    folder = Path(lake.path(BRONZE_TSC.name))
    # The table exists (empty) before the write: its version to fall back to.
    delta_io.ensure_table(spark, lake, BRONZE_TSC.name)
    before = delta_io.current_version(spark, lake, BRONZE_TSC.name)
    job = Job("ingest", lake.root, danmaku, tmp_path / "ingest-killed.log")
    job.wait_for_line(r"ingest: \d+ files")
    deadline = time.monotonic() + 300
    while not any(folder.rglob("*.parquet")):  # the first data file of the write: tasks have written, no commit
        assert job.proc.poll() is None, f"the job ended before writing:\n{job.text()[-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The kill point: a random moment after the first data file, as long as no commit has landed.
    delay = kill_point("driver", trial).uniform(0.0, 0.3)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and not (folder / "_delta_log" / f"{before + 1:020d}.json").exists():
        time.sleep(0.01)
    job.kill()
    orphans = len(list(folder.rglob("*.parquet")))
    assert orphans > 0
    assert delta_io.current_version(spark, lake, BRONZE_TSC.name) == before  # no half-written version
    assert delta_io.read_table(spark, lake, BRONZE_TSC.name).count() == 0  # and the files it left are not read

    rerun = Job("ingest", lake.root, danmaku, tmp_path / "ingest-rerun.log")
    assert rerun.wait() == 0, rerun.text()[-3000:]
    rows, keys = keys_and_rows(spark, lake, BRONZE_TSC)
    assert rows == keys == N_COMMENTS
    runs = delta_io.read_table(spark, lake, "ops.job_runs").filter(F.col("job") == "ingest")
    assert runs.filter(F.col("status") == "succeeded").count() == 1
    tally.trial("driver killed mid Delta write", trial, orphan_files_ignored=orphans, rows_checked=rows,
                duplicates=rows - keys, lost_rows=N_COMMENTS - keys, kill_point=f"first data file +{delay:.2f}s")
