"""spark-submit entry point for `kfr evaluate`: `spark-submit jobs/evaluate.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
