"""spark-submit entry point for `kfr shots`: `spark-submit jobs/shots.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["shots", *sys.argv[1:]]))
