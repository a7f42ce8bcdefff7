"""jupyter-mole: OpenMOLE model explorations from Jupyter.

This module holds entry points only and imports nothing heavy: importing
``jupyter_mole`` must stay cheap for Jupyter's extension discovery.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension"]  # and the Jupyter server extension points


def load_ipython_extension(shell: object) -> None:
    """``%load_ext jupyter_mole``: the ``%%mole`` and ``%mole`` magics."""
    from .kernel import load_ipython_extension as load

    load(shell)


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The server extension: an ExtensionApp, imported only when Jupyter asks for it."""
    from .labserver.app import MoleExtension

    return [{"module": "jupyter_mole", "app": MoleExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-mole"}]
