"""spark-submit entry point for `kfr tokenize`: `spark-submit jobs/tokenize.py --config conf/cluster.yaml [args]`."""

import os
import sys

# This file's name is also the standard library's `tokenize` (imported by linecache, inspect, dataclasses), and a
# script's folder comes first on sys.path: for any script in jobs/ (and for this one), `import tokenize` would
# find this file. So: take the folder off sys.path, and when imported as a module, stand in the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if __name__ != "__main__":
    import importlib

    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
else:
    from kfr_spark.cli import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
