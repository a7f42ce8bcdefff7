"""The Jupyter server extension: the OpenMOLE API proxied under Jupyter's own authentication.

Configuration is ``c.Mole...`` (see ``config.Mole``). With no ``url`` the
embedded server is started in the background (or an already running one is
reused) and the connection file that kernels read is written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_jupyter_server_extension"]


def load_jupyter_server_extension(serverapp: Any) -> None:
    from .backend import Backend
    from .config import Mole
    from .handlers import routes

    config = Mole(parent=serverapp)  # invalid traits fail here, naming the trait
    config.check()
    backend = Backend(config, serverapp.log)
    web_app = serverapp.web_app
    web_app.settings["mole_backend"] = backend
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    serverapp.io_loop.add_callback(backend.connect)
    serverapp.log.info(
        "jupyter-mole: the OpenMOLE API is proxied under %smole/api/", web_app.settings["base_url"]
    )
