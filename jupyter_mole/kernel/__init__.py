"""What runs in a kernel: the ``%%mole`` magics, the execution handle and its live view.

Imports only the client, the protocol and the archive: a kernel never loads
the engine or the server.
"""

from __future__ import annotations

from .errors import ExecutionFailed
from .handle import Execution

__all__ = ["Execution", "ExecutionFailed", "load_ipython_extension"]


def load_ipython_extension(shell: object) -> None:
    """``%load_ext jupyter_mole``: register the ``mole`` magics."""
    from .awaiting import install
    from .magics import MoleMagics

    shell.register_magics(MoleMagics)  # type: ignore[attr-defined]
    install(shell)  # in a kernel, a waiting %%mole cell awaits: its widget's buttons work
