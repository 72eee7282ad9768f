"""spark-submit entry point for `kfr export`: `spark-submit jobs/export.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
