"""spark-submit entry point for `kfr nightly`: `spark-submit jobs/nightly.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
