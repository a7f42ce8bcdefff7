"""The ipywidgets panel of an execution: state, progress, counters, errors, output, actions.

Every value a person sees is a widget model value, so tests read them the way
the front end does. Cancel and Remove ask first; downloads land in the
notebook's folder under a folder named after the execution and never
overwrite silently. A front end that cannot render widgets (jupyter console,
nbconvert) shows the panel's text/plain instead: the state in words, updated
at the end, rather than the ``VBox(children=...)`` of a bare widget.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..protocol import ExecutionState
from .view import final_text, jobs_completed, progress_line

if TYPE_CHECKING:
    from .handle import Execution

__all__ = ["Panel", "WidgetView", "counts_table"]

WHOLE = "(the whole work directory)"

_COLORS = {"running": "#1976d2", "finished": "#2e7d32", "failed": "#c62828", "cancelled": "#6d6d6d"}


def _badge(state: str) -> str:
    color = _COLORS.get(state, "#6d6d6d")
    return (
        f"<span style='background:{color};color:white;border-radius:3px;padding:1px 6px'>"
        f"{html.escape(state)}</span>"
    )


# The front end's own look, light or dark: JupyterLab's theme variables (with fallbacks for
# front ends without them). An HTML widget is not styled as rendered Markdown is, so a bare
# <table> has centred headers over left-aligned numbers, and the widget's tall line height.
_TABLE = (
    "border-collapse:collapse;margin:2px 0 4px;line-height:1.5;"
    "font-family:var(--jp-ui-font-family,inherit);font-size:var(--jp-ui-font-size1,13px);"
    "color:var(--jp-ui-font-color1,inherit)"
)
_NAME = "text-align:left;padding:2px 0;white-space:nowrap"
_NUMBER = "text-align:right;padding:2px 0 2px 1.6em;font-variant-numeric:tabular-nums"
_HEAD = (
    "font-weight:600;color:var(--jp-ui-font-color2,#616161);"
    "border-bottom:1px solid var(--jp-border-color2,#e0e0e0)"
)
_SECTION = "padding-top:8px"  # the header of the environments, below the tasks
_ALARM = "color:var(--jp-error-color1,#d32f2f);font-weight:600"


def _cell(tag: str, text: object, style: str) -> str:
    return f"<{tag} style='{style}'>{html.escape(str(text))}</{tag}>"


def counts_table(state: ExecutionState) -> str:
    """The counters of each task and of each environment, as one HTML table.

    One table, a section each, so that the columns of both line up: names on the
    left, numbers right-aligned under right-aligned headers. Failed jobs of an
    environment stand out in the theme's error colour.
    """
    sections: list[tuple[tuple[str, ...], list[tuple[str, tuple[int, ...]]]]] = []
    if state.capsules:
        rows = [(name, (c.ready, c.running, c.completed)) for name, c in state.capsules]
        sections.append((("task", "ready", "running", "completed"), rows))
    if state.environments:
        rows = [
            (e.name or "environment", (e.submitted, e.running, e.done, e.failed))
            for e in state.environments
        ]
        sections.append((("environment", "submitted", "running", "done", "failed"), rows))
    if not sections:
        return ""
    width = max(len(headers) for headers, _ in sections)
    bodies = []
    for index, (headers, rows) in enumerate(sections):
        gap = f";{_SECTION}" if index else ""
        cells = [_cell("th", headers[0], f"{_NAME};{_HEAD}{gap}")]
        cells += [_cell("th", h, f"{_NUMBER};{_HEAD}{gap}") for h in headers[1:]]
        cells += [f"<th style='{_HEAD}{gap}'></th>"] * (width - len(headers))
        lines = ["<tr>" + "".join(cells) + "</tr>"]
        for name, numbers in rows:
            cells = [_cell("td", name, _NAME)]
            for header, number in zip(headers[1:], numbers, strict=True):
                alarm = f";{_ALARM}" if header == "failed" and number else ""
                cells.append(_cell("td", number, f"{_NUMBER}{alarm}"))
            cells += ["<td></td>"] * (width - len(headers))
            lines.append("<tr>" + "".join(cells) + "</tr>")
        bodies.append("<tbody>" + "".join(lines) + "</tbody>")
    return f"<table class='mole-counts' style='{_TABLE}'>" + "".join(bodies) + "</table>"


def _errors_html(errors: list[dict[str, Any]]) -> str:
    items = []
    for e in errors:
        count = int(e.get("count") or 1)
        times = f" (x{count})" if count > 1 else ""
        trace = e.get("stack-trace") or e.get("stack_trace") or e.get("stackTrace")
        summary = (
            f"<b>{html.escape(str(e.get('level')))}</b> {html.escape(str(e.get('message')))}{times}"
        )
        if trace:
            items.append(
                f"<details><summary>{summary}</summary><pre>{html.escape(trace)}</pre></details>"
            )
        else:
            items.append(f"<div>{summary}</div>")
    return "".join(items)


class _Confirm:
    """A button that asks "are you sure?" before acting."""

    def __init__(self, label: str, question: str, action: Any, style: str = "") -> None:
        self.button = w.Button(description=label, button_style=style)
        self.yes = w.Button(description="Yes", button_style="danger")
        self.no = w.Button(description="No")
        self.question = w.HBox(
            [w.Label(question), self.yes, self.no], layout=w.Layout(display="none")
        )
        self.button.on_click(lambda _: self.ask())
        self.no.on_click(lambda _: self.close())
        self.yes.on_click(lambda _: (self.close(), action()))

    def ask(self) -> None:
        self.question.layout.display = "flex"

    def close(self) -> None:
        self.question.layout.display = "none"


class Panel(w.VBox):
    """The displayed box: the widget where widgets render, its state in words where not."""

    def __init__(self, children: list[w.Widget], describe: Callable[[], str]) -> None:
        super().__init__(children)
        self._describe = describe

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self._describe()
        return bundle


class WidgetView:
    """The panel; ``update`` and ``finish`` are called by the Follower."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self.follower: Any = None
        self.handle: Any = None  # the display's handle: the end updates its text/plain
        self.text = f"{execution.script or 'execution'} ({execution.id}): starting"
        script = html.escape(execution.script or "")
        self.title = w.HTML(f"<b>{script}</b> <code>{execution.id}</code>")
        self.state_label = w.HTML(_badge("running"))
        self.progress = w.IntProgress(value=0, min=0, max=1, description="jobs", bar_style="info")
        self.progress_text = w.Label("0 / 0")
        self.counts = w.HTML("")
        self.errors = w.HTML("")
        self.output = w.Textarea(
            value="", disabled=True, layout=w.Layout(width="100%", height="12em")
        )
        self.message = w.HTML("")
        self.cancel = _Confirm("Cancel", "Cancel this execution?", self._cancel, "warning")
        self.remove = _Confirm(
            "Remove", "Remove this execution and its files from the server?", self._remove, "danger"
        )
        self.download_button = w.Button(description="Download results", icon="download")
        self.download_button.on_click(lambda _: self.open_downloads())
        self.files = w.SelectMultiple(options=[], rows=6, description="files")
        self.destination = w.Text(value=str(execution.default_destination()), description="to")
        self.fetch = w.Button(description="Download", button_style="primary")
        self.fetch.on_click(lambda _: self.download())
        self.downloads = w.VBox(
            [self.files, self.destination, self.fetch], layout=w.Layout(display="none")
        )
        buttons = w.HBox([self.cancel.button, self.download_button, self.remove.button])
        self.box = Panel(
            [
                w.HBox([self.title, self.state_label]),
                w.HBox([self.progress, self.progress_text]),
                self.counts,
                self.errors,
                self.output,
                buttons,
                self.cancel.question,
                self.remove.question,
                self.downloads,
                self.message,
            ],
            lambda: self.text,
        )

    # -- from the follower -------------------------------------------------------------
    def update(self, state: ExecutionState, tail: str, new_output: str, errors: list[dict]) -> None:
        self.state_label.value = _badge(state.state)
        total = max(state.total, 1)
        self.progress.max = total
        self.progress.value = min(state.completed, total)
        self.progress_text.value = f"{state.completed} / {state.total}"
        self.text = f"{self.execution.script or 'execution'} ({self.execution.id}): " + (
            progress_line(state)
        )
        self.counts.value = counts_table(state)
        self.errors.value = _errors_html(errors)
        if new_output:
            self.output.value = tail

    def finish(self, state: ExecutionState) -> None:
        self.progress.bar_style = {"finished": "success", "failed": "danger"}.get(state.state, "")
        if state.state == "finished":
            jobs = jobs_completed(state)
            self.progress.max = max(jobs, 1)
            self.progress.value = self.progress.max
            self.progress_text.value = f"{jobs} / {jobs}"
        self.cancel.button.disabled = True
        if state.error is not None:
            self.message.value = f"<pre>{html.escape(state.error.message)}</pre>"
        self.text = final_text(self.execution, state)
        if self.handle is not None:  # what a front end without widgets shows: the end
            self.handle.update(self.box)

    def problem(self, message: str) -> None:
        self.message.value = f"<i>{html.escape(message)}</i>"

    # -- actions -----------------------------------------------------------------------
    def _cancel(self) -> None:
        try:
            self.execution.cancel()
            self.message.value = "cancelled"
            if self.follower is not None:
                self.follower.refresh()
        except Exception as e:
            self.problem(f"cancel failed: {e}")

    def _remove(self) -> None:
        try:
            self.execution.remove()
            if self.follower is not None:  # only once removed: if not, it is still to follow
                self.follower.stop()
            self.state_label.value = _badge("removed")
            self.message.value = "removed from the server"
            for button in (self.cancel.button, self.remove.button, self.download_button):
                button.disabled = True
        except Exception as e:
            self.problem(f"remove failed: {e}")

    def open_downloads(self) -> None:
        from ..client import Unsupported

        try:
            entries = self.execution.client.listing(self.execution.id, "")
        except Unsupported:  # OpenMOLE's token API lists nothing: the whole directory it is
            entries = []
        except Exception as e:
            self.problem(f"cannot list the work directory: {e}")
            return
        self.files.options = [WHOLE] + [
            e.name + ("/" if e.type == "directory" else "") for e in entries
        ]
        self.downloads.layout.display = "flex"

    def download(self) -> None:
        chosen = list(self.files.value) or [WHOLE]
        done = []
        for name in chosen:
            path = "" if name.startswith("(") else name.rstrip("/")
            try:
                done.append(str(self.execution.download(path, self.destination.value)))
            except Exception as e:
                self.problem(f"{name}: {e}")
                return
        self.message.value = "downloaded: " + ", ".join(html.escape(d) for d in done)
