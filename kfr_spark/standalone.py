"""A real Spark standalone cluster on this machine: one master and N workers, on loopback.

Platform teams run kfr on a cluster, where executors are separate JVMs that die on their own. A standalone cluster
started from the installed Spark distribution is the smallest real one: jobs reach it with `spark-submit --master
spark://...` exactly as they reach a production master, tasks run in executor processes of their own, and a test
can kill a worker mid-job. pip's pyspark ships `bin/spark-class` but not `sbin/start-master.sh`, so the daemons are
launched directly with `spark-class`, which is all those scripts do.

    with StandaloneCluster(workdir, workers=2) as cluster:
        subprocess.run(["spark-submit", "--master", cluster.master_url, "jobs/nightly.py", ...])

`python -m kfr_spark.standalone start|stop|status --workdir DIR` runs one in the background for a shell session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
_STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The cluster did not come up (the message names the log to read)."""


def spark_home() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(os.environ.get("SPARK_HOME") or _find_spark_home())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StandaloneCluster:
    """A master and `workers` workers of `cores_per_worker` cores each; logs and work dirs under `workdir`."""

    workdir: Path
    workers: int = 2
    cores_per_worker: int = 1
    worker_memory: str = "4g"
    master_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    _master: subprocess.Popen | None = field(default=None, repr=False)
    _workers: list[subprocess.Popen | None] = field(default_factory=list, repr=False)
    _started_workers: int = field(default=0, repr=False)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def spark_conf(self, executor_memory: str = "3g") -> dict[str, str]:
        """Settings a driver needs on this cluster: one executor per worker, using all of its cores."""
        return {"spark.master": self.master_url, "spark.executor.memory": executor_memory,
                "spark.executor.cores": str(self.cores_per_worker),
                "spark.cores.max": str(self.workers * self.cores_per_worker)}

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120) -> StandaloneCluster:
        self.workdir = Path(self.workdir).resolve()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._master = self._daemon("master", MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.master_port),
                                    "--webui-port", str(self.ui_port))
        self._workers = [self._start_worker(i) for i in range(self.workers)]
        self.wait_for_workers(self.workers, timeout_s)
        log.info("standalone cluster %s up: %d workers x %d cores", self.master_url, self.workers,
                 self.cores_per_worker)
        return self

    def stop(self) -> None:
        for proc in [*self._workers, self._master]:
            if proc is not None:
                kill_tree(proc.pid, signal.SIGTERM)
        for proc in [*self._workers, self._master]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=20)
                kill_tree(proc.pid, signal.SIGKILL)
        self._workers, self._master = [], None

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """The master's own view (its web UI's JSON): workers, their state, running applications."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        try:
            return sum(w["state"] == "ALIVE" for w in self.state()["workers"])
        except OSError:
            return 0

    def wait_for_workers(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_workers() < n:
            if self._master is not None and self._master.poll() is not None:
                raise ClusterError(f"the Spark master exited; see {self.workdir / 'logs' / 'master.log'}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.alive_workers()} of {n} workers registered after {timeout_s:.0f} s; "
                                   f"see the logs in {self.workdir / 'logs'}")
            time.sleep(0.5)

    def executor_pids(self, worker: int | None = None) -> list[int]:
        """Executor JVMs running now (of one worker, or of all): the processes a dying machine takes with it."""
        slots = range(len(self._workers)) if worker is None else [worker]
        pids = []
        for i in slots:
            proc = self._workers[i]
            if proc is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        if EXECUTOR_CLASS in " ".join(child.cmdline()):
                            pids.append(child.pid)
        return pids

    def kill_worker(self, worker: int, *, replace: bool = True) -> list[int]:
        """SIGKILL a worker and its executors at once, as when its machine dies; then start a replacement in its slot,
        as a cluster manager would. Returns the killed executor pids."""
        proc = self._workers[worker]
        executors = self.executor_pids(worker)
        if proc is not None:
            kill_tree(proc.pid, signal.SIGKILL)
            proc.wait()
        log.warning("killed worker %d (pid %s) and executors %s", worker, proc and proc.pid, executors)
        self._workers[worker] = self._start_worker(worker) if replace else None
        return executors

    # -- internals ------------------------------------------------------------------------------------------------
    def _start_worker(self, i: int) -> subprocess.Popen:
        self._started_workers += 1
        work = self.workdir / f"worker-{i}"
        work.mkdir(parents=True, exist_ok=True)
        return self._daemon(f"worker-{i}-{self._started_workers}", WORKER_CLASS, "--host", "127.0.0.1",
                            "--cores", str(self.cores_per_worker), "--memory", self.worker_memory,
                            "--work-dir", str(work), "--webui-port", "0", self.master_url)

    def _daemon(self, name: str, cls: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_NO_DAEMONIZE": "1"}
        env.pop("PYSPARK_GATEWAY_PORT", None)
        out = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (the daemon owns it)
        return subprocess.Popen([str(spark_home() / "bin" / "spark-class"), cls, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def kill_tree(pid: int, sig: int) -> None:
    """Signal a process and every descendant (children first), as losing its machine would."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for proc in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)


# -- `python -m kfr_spark.standalone` -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfr_spark.standalone", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--workdir", type=Path, default=Path("data/standalone"), help="logs, work dirs, state")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores-per-worker", type=int, default=1)
    parser.add_argument("--worker-memory", default="4g")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    state_file = args.workdir / _STATE_FILE
    if args.action == "start":
        cluster = StandaloneCluster(args.workdir, args.workers, args.cores_per_worker, args.worker_memory).start()
        pids = [cluster._master.pid, *(w.pid for w in cluster._workers)]
        state_file.write_text(json.dumps({"master_url": cluster.master_url, "ui_port": cluster.ui_port,
                                          "pids": pids}))
        print(cluster.master_url)
        return 0
    if not state_file.exists():
        print(f"no cluster started from {args.workdir}", file=sys.stderr)
        return 1
    saved = json.loads(state_file.read_text())
    if args.action == "status":
        print(json.dumps(saved))
        return 0
    for pid in saved["pids"]:
        kill_tree(pid, signal.SIGTERM)
    state_file.unlink()
    print(f"stopped {saved['master_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
