"""spark-submit entry point for `kfr tables`: `spark-submit jobs/tables.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["tables", *sys.argv[1:]]))
