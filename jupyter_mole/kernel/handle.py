"""The execution handle a notebook holds: what ``%%mole`` returns and ``-o NAME`` stores.

A thin object over the client: everything it does is one REST call, so it
works the same for an execution started in this kernel, in another notebook,
or before a kernel restart (``Execution(client, id)``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..protocol import ExecutionState

if TYPE_CHECKING:
    import pandas

    from ..client import MoleClient

__all__ = ["Execution"]


class Execution:
    """An execution on a server: state, output, files, control, and its widget."""

    def __init__(
        self,
        client: MoleClient,
        execution_id: str,
        script: str | None = None,
        folder: Path | None = None,
    ) -> None:
        self.client = client
        self.id = execution_id
        self.script = script
        self.folder = folder or Path.cwd()  # the notebook's folder: where downloads land

    def __repr__(self) -> str:
        script = f" {self.script}" if self.script else ""
        return f"<Execution {self.id}{script}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    # -- reading -----------------------------------------------------------------------
    def state(self) -> ExecutionState:
        return self.client.state(self.id)

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> ExecutionState:
        """Block until the execution ends (or ``timeout`` seconds pass); its state then."""
        return self.client.wait(self.id, poll=poll, timeout=timeout)

    def output(self, offset: int = 0) -> str:
        text, _ = self.client.output(self.id, offset)
        return text

    def errors(self) -> list[Any]:
        return self.client.errors(self.id)

    # -- files -------------------------------------------------------------------------
    def default_destination(self) -> Path:
        """Downloads land in the notebook's folder, under a folder named after the execution."""
        return self.folder / f"mole-{self.id[:8]}"

    def download(
        self, path: str = "", to: str | os.PathLike[str] | None = None, overwrite: bool = False
    ) -> Path:
        """Fetch a file or folder of the work directory (all of it by default); never overwrites silently."""
        base = Path(to) if to is not None else self.default_destination()
        if not base.is_absolute():
            base = self.folder / base
        name = Path(path.strip("/")).name if path.strip("/") else ""
        destination = base / name if name else base
        return self.client.download(self.id, path, destination, overwrite=overwrite)

    def results(self, name: str = "", to: str | os.PathLike[str] | None = None) -> pandas.DataFrame:
        """A CSV (or OpenMOLE ``.omr``) result of the work directory as a pandas DataFrame."""
        import pandas

        if not name:
            candidates = [
                e.name
                for e in self.client.listing(self.id, "")
                if e.name.endswith((".csv", ".omr"))
            ]
            if len(candidates) != 1:
                found = ", ".join(candidates) or "none"
                raise ValueError(
                    f"name the result to load: results('file.csv'); result files found: {found}"
                )
            name = candidates[0]
        local = Path(to) / Path(name).name if to is not None else self.default_destination() / name
        if not local.is_absolute():
            local = self.folder / local
        if not local.exists():
            self.client.download(self.id, name, local)
        if name.endswith(".omr"):
            from .omr import data_file, read_omr

            data = data_file(local)  # the index names a data file beside it: fetch that too
            if not (local.parent / data).exists():
                remote = PurePosixPath(name.strip("/")).parent / data
                self.client.download(self.id, str(remote), local.parent / data)
            return read_omr(local)
        return pandas.read_csv(local)

    # -- control -----------------------------------------------------------------------
    def cancel(self) -> None:
        self.client.cancel(self.id)

    def remove(self) -> None:
        self.client.remove(self.id)

    def widget(self, poll: float = 1.0) -> Any:
        """A live view of this execution (text progress where widgets cannot render)."""
        from .view import show

        return show(self, poll=poll)
