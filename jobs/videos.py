"""spark-submit entry point for `kfr videos`: `spark-submit jobs/videos.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["videos", *sys.argv[1:]]))
