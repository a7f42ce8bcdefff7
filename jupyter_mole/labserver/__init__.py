"""The Jupyter server extension: the OpenMOLE API proxied under Jupyter's own authentication.

Configuration is ``c.Mole...`` (see ``config.Mole``). With no ``url`` the
embedded server is started in the background (or an already running one is
reused) and the connection file that kernels read is written. Kernels also
learn Jupyter's root folder (``MOLE_JUPYTER_ROOT``), to tag executions with
notebook paths as the file browser shows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["load_jupyter_server_extension"]


def load_jupyter_server_extension(serverapp: Any) -> None:
    from .. import connection
    from .backend import Backend
    from .config import Mole
    from .handlers import routes

    config = Mole(parent=serverapp)  # invalid traits fail here, naming the trait
    config.check()
    # Kernels get this process's environment: so they learn the root that the notebook paths
    # Jupyter gives them (JPY_SESSION_NAME, absolute) are relative to in the file browser.
    os.environ[connection.ROOT_VARIABLE] = str(Path(serverapp.root_dir).absolute())
    backend = Backend(config, serverapp.log)
    web_app = serverapp.web_app
    web_app.settings["mole_backend"] = backend
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    serverapp.io_loop.add_callback(backend.connect)
    serverapp.log.info(
        "jupyter-mole: the OpenMOLE API is proxied under %smole/api/", web_app.settings["base_url"]
    )
