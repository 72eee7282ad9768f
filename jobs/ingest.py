"""spark-submit entry point for `kfr ingest`: `spark-submit jobs/ingest.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
