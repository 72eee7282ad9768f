"""spark-submit entry point for `kfr gallery`: `spark-submit jobs/gallery.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["gallery", *sys.argv[1:]]))
