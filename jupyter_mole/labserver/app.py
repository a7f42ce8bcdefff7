"""The extension as Jupyter knows it: an ExtensionApp, for its settings and its shutdown hook.

A function-style extension can neither list its settings in a ``--help-all``
nor be told that Jupyter stops; an ExtensionApp can, so this class exists,
and holds no logic of its own: it builds the configuration (``Mole``), the
``Backend`` and the routes, and closes the backend when Jupyter stops.

``jupyter server --help-all`` cannot show ``Mole``: Jupyter reads the command
line before it looks for extensions. ``jupyter mole --help-all`` shows it (the
command line hands these flags to this class, as ``jupyter lab`` does for its
own), and ``jupyter mole --generate-config`` writes ``jupyter_mole_config.py``,
which Jupyter reads for this extension next to ``jupyter_server_config.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp

from .. import connection
from .backend import Backend
from .config import Mole
from .handlers import routes

__all__ = ["MoleExtension", "main"]


class MoleExtension(ExtensionApp):
    """jupyter-mole's Jupyter server extension: OpenMOLE's REST API under ``{base_url}mole/api/``."""

    name = "mole"  # so its own config file is jupyter_mole_config.py
    description = (
        "jupyter-mole's Jupyter server extension: the OpenMOLE REST API of the configured "
        "server (c.Mole.url), or of the embedded one, proxied under Jupyter's authentication."
    )
    classes = [Mole]  # its settings in --help-all and --generate-config

    backend: Backend | None = None

    def initialize_settings(self) -> None:
        """Read and check ``c.Mole`` (invalid traits fail here, naming the trait), and start
        looking for the backend as soon as Jupyter's event loop runs."""
        assert self.serverapp is not None
        log = self.serverapp.log
        config = Mole(parent=self)
        config.check(log)
        # Kernels get this process's environment: so they learn the root that the notebook paths
        # Jupyter gives them (JPY_SESSION_NAME, absolute) are relative to in the file browser.
        os.environ[connection.ROOT_VARIABLE] = str(Path(self.serverapp.root_dir).absolute())
        self.backend = Backend(config, log)
        self.settings["mole_backend"] = self.backend
        # Not awaited: an unreachable backend, or an embedded server slow to start, must not
        # hold Jupyter's start; requests meanwhile wait for it (or get its problem).
        self.serverapp.io_loop.add_callback(self.backend.connect)

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None
        # Jupyter prefixes these with its base_url
        self.handlers.extend(routes("/"))
        self.serverapp.log.info(
            "jupyter-mole: the OpenMOLE API is proxied under %smole/api/", self.serverapp.base_url
        )

    async def stop_extension(self) -> None:
        """Jupyter stops: close the backend's client. The embedded server keeps running, for
        the kernels and for the executions (see ``Backend.close``)."""
        backend = self.backend
        if backend is None:
            return
        await backend.close()
        if backend.embedded and backend.connection is not None:
            assert self.serverapp is not None
            self.serverapp.log.info(
                "jupyter-mole: the embedded server (pid %s) keeps running, for the kernels and "
                "the executions; the next Jupyter reuses it",
                backend.connection.pid,
            )


def main(argv: Sequence[str]) -> int:
    """``jupyter mole --help-all`` and ``jupyter mole --generate-config [-y]``: the settings.

    What ``jupyter lab`` does with these flags, without ever starting a server.
    """
    app = MoleExtension()
    if "--generate-config" in argv:
        app.answer_yes = "-y" in argv or "--y" in argv
        app.write_default_config()
    else:
        app.print_help(classes=True)
    return 0
