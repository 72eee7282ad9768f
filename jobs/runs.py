"""spark-submit entry point for `kfr runs`: `spark-submit jobs/runs.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["runs", *sys.argv[1:]]))
