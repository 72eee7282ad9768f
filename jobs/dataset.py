"""spark-submit entry point for `kfr dataset`: `spark-submit jobs/dataset.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["dataset", *sys.argv[1:]]))
