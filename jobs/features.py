"""spark-submit entry point for `kfr features`: `spark-submit jobs/features.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))
