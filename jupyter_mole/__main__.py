"""``python -m jupyter_mole``: the same command line as ``jupyter-mole``.

The guard matters: Dask starts its workers with multiprocessing's spawn, which
re-imports this module in each worker as ``__mp_main__``; without it every
worker would run the command line again.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
