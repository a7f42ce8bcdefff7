"""The proxy API under ``{base_url}mole/api/``: thin handlers over the Backend.

Every handler requires Jupyter's authentication (and its XSRF check for what
changes state), and Jupyter's authorization: the resource is ``mole`` (read
for GET, write for the rest), and what touches Jupyter's file tree also needs
``contents`` (read to send a script's folder, write to save into it). Hidden
files and folders of the tree are refused, unless Jupyter shows them
(``ContentsManager.allow_hidden``). The browser never sees the backend's
password or token.
Client errors come back as ``{"message"}`` with the backend's status; what a
backend does not offer (OpenMOLE has no cancel without delete) is said
plainly with 501.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import tornado.web
from jupyter_core.paths import is_hidden
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ensure_async, url_path_join

from ..archive import ArchiveError, ArchiveTooLarge
from ..client import (
    MOLE,
    ConnectionFailed,
    DestinationExists,
    MoleClientError,
    NotFound,
    Refused,
    Unsupported,
)
from .backend import Backend, BackendUnavailable

__all__ = ["AUTH_RESOURCE", "routes"]

AUTH_RESOURCE = "mole"
"""What Jupyter's Authorizer is asked about (``is_authorized(handler, user, action, "mole")``)."""


class MoleHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def backend(self) -> Backend:
        return self.settings["mole_backend"]

    def send(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(obj, default=_jsonable))

    def refuse(self, status: int, message: str, stack_trace: str | None = None) -> None:
        self.set_status(status)
        body = {"message": message}
        if stack_trace:
            body["stackTrace"] = stack_trace
        self.finish(json.dumps(body))

    async def guarded(self, coro: Any) -> Any:
        """Await a backend call; turn its errors into answers. None when an answer was sent."""
        try:
            return await coro
        except Unsupported as e:
            self.refuse(501, f"the backend does not offer this: {e}")
        except NotFound as e:
            self.refuse(404, str(e))
        except DestinationExists as e:
            self.refuse(409, str(e))
        except Refused as e:
            self.refuse(e.status or 417, str(e), e.stack_trace)
        except ConnectionFailed as e:
            self.refuse(502, f"the backend does not answer: {e}")
        except MoleClientError as e:
            self.refuse(502, f"the backend refused: {e}")
        except BackendUnavailable as e:
            self.refuse(503, f"no backend: {e}")
        except ArchiveError as e:
            self.refuse(413 if isinstance(e, ArchiveTooLarge) else 400, str(e))
        except FileNotFoundError as e:
            self.refuse(404, str(e))
        except (ValueError, NotADirectoryError, IsADirectoryError) as e:
            self.refuse(400, str(e))
        return None

    def body(self) -> dict[str, Any] | None:
        """The JSON object sent, or None (and a 400 sent)."""
        body = self.get_json_body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            self.refuse(400, "the body must be a JSON object")
            return None
        return body

    def root(self) -> Path:
        return Path(
            self.settings.get("server_root_dir") or self.settings["contents_manager"].root_dir
        ).resolve()

    def inside_root(self, relative: str) -> Path | None:
        """A path of Jupyter's file tree, or None (and a 403 sent) if it leads outside."""
        pure = PurePosixPath(relative.strip("/"))
        root = self.root()
        target = root.joinpath(*pure.parts).resolve() if pure.parts else root
        if ".." in pure.parts or not target.is_relative_to(root):
            self.refuse(403, f"{relative}: the path must stay inside Jupyter's root directory")
            return None
        return target

    def shown(self, path: Path, relative: str) -> bool:
        """Whether Jupyter shows this path of its tree; if not, False (and a 403 sent).

        Jupyter hides files and folders whose name starts with a dot, unless
        ``ContentsManager.allow_hidden``: what its file browser may not open, the
        sidebar may neither send to a server nor write into.
        """
        if self.settings["contents_manager"].allow_hidden:
            return True
        try:
            if not is_hidden(path, self.root()):
                return True
        except OSError:  # a path that cannot be (a file in the middle): the next step says so
            return True
        self.refuse(
            403,
            f"{relative}: a hidden file or folder (a name starting with '.'), which Jupyter "
            "does not show (ContentsManager.allow_hidden is False)",
        )
        return False

    async def may(self, action: str, resource: str) -> bool:
        """Jupyter's authorization for one more resource than the handler's (``contents``);
        if refused, False (and a 403 sent)."""
        user = self.current_user
        if await ensure_async(self.authorizer.is_authorized(self, user, action, resource)):
            return True
        self.refuse(403, f"User is not authorized to {action} on resource: {resource}.")
        return False


def _jsonable(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if to_json is not None:
        return to_json()
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    return str(value)


def _logged(error: Any) -> dict[str, Any]:
    """An entry of the whole error log, spelled as the state's accumulated errors are."""
    return {
        "message": error.message,
        "level": error.level,
        "environment": error.environment,
        "stackTrace": error.stack_trace,
        "time": error.time,
        "count": error.count,
    }


class ServiceHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        backend = self.backend
        if backend.client is None:
            await backend.connect()
        if backend.problem is not None:
            await backend.recheck()  # it may answer now
        info = None
        if backend.client is not None and backend.problem is None:
            info = await self.guarded(backend.call(lambda c: c.service_info()))
            if info is None and self._finished:
                return
        connection = backend.connection
        self.send(
            {
                "kind": backend.kind,
                "url": connection.url if connection else None,
                "embedded": backend.embedded,
                "problem": backend.problem,
                "info": info,
                "poll_interval": backend.config.poll_interval,
                "queries": {"state": backend.queries, "list": backend.list_queries},
            }
        )


class ExecutionsHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        infos = await self.guarded(self.backend.executions())
        if infos is not None:
            self.send(infos)

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """Start a script of Jupyter's file tree: ``{"path": "folder/model.oms"}``; its folder is sent."""
        body = self.body()
        if body is None:
            return
        relative = body.get("path")
        if not isinstance(relative, str) or not relative.endswith(".oms"):
            self.refuse(400, 'give the script to run as {"path": "folder/script.oms"}')
            return
        tags = body.get("tags") or {}
        if not isinstance(tags, dict):
            self.refuse(400, 'tags are a JSON object {"name": "value"}')
            return
        script = self.inside_root(relative)
        if script is None or not self.shown(script, relative):
            return
        if not await self.may("read", "contents"):  # its folder leaves for the backend
            return
        if not script.is_file():
            self.refuse(404, f"there is no script {relative}")
            return
        tags = {"notebook": relative, **{str(k): str(v) for k, v in tags.items()}}
        execution_id = await self.guarded(
            self.backend.call(lambda c: c.start(script.parent, script.name, tags=tags))
        )
        if execution_id is not None:
            self.backend.forget(execution_id)
            self.send({"id": execution_id}, 201)


class StateHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        result = await self.guarded(self.backend.state(execution_id))
        if result is not None:
            state, poller = result
            obj = state.to_json()
            obj["errors"] = list(poller.errors.values())  # every error, for every view
            self.send(obj)


class DetailsHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        info = await self.guarded(self.backend.call(lambda c: c.info(execution_id)))
        if info is not None:
            self.send(info)

    @tornado.web.authenticated
    @authorized
    async def delete(self, execution_id: str) -> None:
        await self.guarded(self.backend.call(lambda c: c.remove(execution_id)))
        if not self._finished:
            self.backend.forget(execution_id)
            self.send({"removed": execution_id})


class OutputHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        try:
            offset = max(0, int(self.get_query_argument("offset", "0")))
        except ValueError:
            self.refuse(400, "offset must be a whole number")
            return
        result = await self.guarded(self.backend.call(lambda c: c.output(execution_id, offset)))
        if result is not None:
            self.send({"output": result[0], "offset": result[1]})


class ErrorsHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        backend = self.backend
        kind = await self.guarded(backend.call(lambda c: c.detect()))
        if kind is None:
            return
        if kind == MOLE:  # the whole log, kept by the server
            errors = await self.guarded(backend.call(lambda c: c.errors(execution_id)))
            if errors is not None:
                self.send([_logged(e) for e in errors])
            return
        # OpenMOLE keeps no log: what the poller has accumulated
        result = await self.guarded(backend.state(execution_id))
        if result is not None:
            self.send(list(result[1].errors.values()))


class FilesHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        path = self.get_query_argument("path", "")
        entries = await self.guarded(self.backend.call(lambda c: c.listing(execution_id, path)))
        if entries is not None:
            self.send(entries)


class CancelHandler(MoleHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, execution_id: str) -> None:
        info = await self.guarded(self.backend.call(lambda c: c.cancel(execution_id)))
        if info is not None:
            self.backend.forget(execution_id)
            self.send(info)


class DownloadHandler(MoleHandler):
    """Save a file or folder of an execution under a folder of Jupyter's file tree.

    ``{"path": "results/out.csv", "to": "notebooks/run1", "overwrite": false}``:
    ``path`` in the work directory ("" for all of it), ``to`` the folder of the
    file tree to save it in (made if missing), under the same name. An existing
    file or folder is never replaced unless ``overwrite`` (409 otherwise).
    """

    @tornado.web.authenticated
    @authorized
    async def post(self, execution_id: str) -> None:
        body = self.body()
        if body is None:
            return
        path, to = body.get("path", ""), body.get("to", "")
        if not isinstance(path, str) or not isinstance(to, str):
            self.refuse(400, 'give {"path": "in/the/work/directory", "to": "folder/of/the/tree"}')
            return
        relative = PurePosixPath(path.strip("/"))
        if ".." in relative.parts:
            self.refuse(400, f"{path}: the path must stay inside the work directory")
            return
        destination = self.inside_root(to)
        if destination is None:
            return
        if destination.exists() and not destination.is_dir():
            self.refuse(409, f"{to} is a file; give the folder to save into")
            return
        target = destination / (relative.name or f"mole-{execution_id[:8]}")
        if not self.shown(target, PurePosixPath(to.strip("/"), target.name).as_posix()):
            return
        if not await self.may("write", "contents"):
            return
        overwrite = body.get("overwrite") is True
        written = await self.guarded(
            self.backend.call(lambda c: c.download(execution_id, path, target, overwrite))
        )
        if written is not None:
            self.send({"path": Path(written).relative_to(self.root()).as_posix()}, 201)


def routes(base_url: str) -> list[tuple[str, type]]:
    api = url_path_join(base_url, "mole", "api")
    one = r"/executions/(?P<execution_id>[\w-]+)"
    return [
        (url_path_join(api, "service"), ServiceHandler),
        (url_path_join(api, "executions"), ExecutionsHandler),
        (api + one, DetailsHandler),
        (api + one + "/state", StateHandler),
        (api + one + "/output", OutputHandler),
        (api + one + "/errors", ErrorsHandler),
        (api + one + "/files", FilesHandler),
        (api + one + "/cancel", CancelHandler),
        (api + one + "/download", DownloadHandler),
    ]
