"""spark-submit entry point for `kfr align`: `spark-submit jobs/align.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["align", *sys.argv[1:]]))
