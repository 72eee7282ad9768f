"""spark-submit entry point for `kfr synth`: `spark-submit jobs/synth.py --config conf/cluster.yaml [args]`."""

import sys

from kfr_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
