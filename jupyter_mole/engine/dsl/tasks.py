"""Tasks: the units of work (OpenMOLE's ``ScalaTask``, ``EmptyTask``...).

A task declares its inputs and outputs. Its inputs come from the context (or
its defaults), are type-checked on the way in, and only its declared outputs
leave it, type-checked on the way out: a declared output that is also an input
passes through unchanged when the task does not set it, as in OpenMOLE.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import TaskError, WorkflowError
from .puzzle import Capsule, Puzzle, describe
from .site import script_site
from .values import Val, check_value, type_label

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..job import JobContext

__all__ = ["EmptyTask", "PythonTask", "Task"]

# A function taking ``**inputs`` gets every input. Not ``()``: that is a function
# of no parameters, which gets none of them (its task may still declare inputs).
_EVERY_INPUT: Any = object()


def _as_vals(items: Iterable[Any] | None, what: str, task: str) -> tuple[Val, ...]:
    vals = tuple(items or ())
    for item in vals:
        if not isinstance(item, Val):
            raise WorkflowError(f"the {what} of task {task} must be Vals, got {describe(item)}")
    return vals


class Task(Puzzle):
    """Base of all tasks: inputs, outputs, defaults and the checks around ``process``."""

    kind = "Task"

    def __init__(
        self,
        inputs: Iterable[Val] | None = None,
        outputs: Iterable[Val] | None = None,
        defaults: Mapping[Val, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self._name = name
        label = name or self.kind
        self.inputs = _as_vals(inputs, "inputs", label)
        self.outputs = _as_vals(outputs, "outputs", label)
        self.defaults: dict[Val, Any] = dict(defaults or {})
        for key in self.defaults:
            if not isinstance(key, Val):
                raise WorkflowError(
                    f"the defaults of task {label} are keyed by Vals ({{x: 3}}), got {describe(key)}"
                )
        # A default makes a value an input even if it was not listed (OpenMOLE's `x := 3`).
        self.inputs += tuple(v for v in self.defaults if v not in self.inputs)
        self._plan: tuple | None = None
        # The script the task comes from (file name, text), to show its lines in tracebacks.
        self.script: tuple[str, str] | None = None
        # "pi.oms, line 7": named by the errors its jobs raise, which come from a worker.
        self.site: str | None = script_site()

    # -- naming -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name or self.kind

    def _assign_name(self, name: str) -> None:
        if self._name is None:
            self._name = name

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_plan"] = None
        return state

    # -- puzzle -----------------------------------------------------------------
    def on(self, environment: Any) -> Puzzle:
        return Capsule(self).on(environment)

    def by(self, n: int) -> Puzzle:
        return Capsule(self).by(n)

    def hook(self, *hooks: Any) -> Puzzle:
        return Capsule(self).hook(*hooks)

    def capsules(self) -> Iterator[Capsule]:
        yield Capsule(self)

    def _map_capsules(self, f: Callable[[Capsule], Capsule]) -> Puzzle:
        return f(Capsule(self))

    def check_available(self, available: Mapping[str, Val]) -> None:
        """Static check that every input is provided, with a compatible type."""
        defaults = {v.name for v in self.defaults}
        for val in self.inputs:
            provided = available.get(val.name)
            if provided is None:
                if val.name in defaults:
                    continue
                names = ", ".join(sorted(available)) or "nothing"
                raise WorkflowError(
                    f"task {self.name} needs input {val.name} ({type_label(val.type)}), which "
                    f"nothing provides here (available: {names}); produce it upstream, sample "
                    f"it, or give it a default: defaults={{{val.name}: ...}}"
                )
            if provided is not val and not _compatible(provided.type, val.type):
                raise WorkflowError(
                    f"task {self.name} takes {val.name} as {type_label(val.type)}, "
                    f"but here {val.name} is {type_label(provided.type)}"
                )

    # -- running ----------------------------------------------------------------
    def error(self, detail: str, separator: str = ": ", tail: str = "") -> TaskError:
        """An error of this task's job, naming the task and the script line that defines it."""
        return TaskError(self.name, detail, self.site, separator, tail)

    def _checked(self, val: Val, value: Any, what: str) -> Any:
        try:
            return check_value(val, value, what)
        except WorkflowError as e:
            raise self.error(e.message, separator=", ") from None

    def _prepare(self) -> tuple:
        if self._plan is None:
            defaults = {v.name: value for v, value in self.defaults.items()}
            self._plan = (
                tuple((v.name, v) for v in self.inputs),
                tuple((v.name, v) for v in self.outputs),
                defaults,
            )
        return self._plan

    def perform(self, context: Mapping[str, Any], job: JobContext) -> dict[str, Any]:
        """Check inputs, run ``process``, keep and check the declared outputs."""
        inputs_plan, outputs_plan, defaults = self._prepare()
        inputs: dict[str, Any] = {}
        for name, val in inputs_plan:
            if name in context:
                value = context[name]
            elif name in defaults:
                value = defaults[name]
            else:
                raise self.error(f"input {name} is missing from the context")
            if type(value) is not val.type:  # the exact type needs no check: the usual case
                value = self._checked(val, value, "input")
            inputs[name] = value
        result = self.process(inputs, job)
        outputs: dict[str, Any] = {}
        for name, val in outputs_plan:
            if name in result:
                value = result[name]
            elif name in inputs:
                value = inputs[name]
            else:
                raise self.error(
                    f"did not produce its output {name} ({type_label(val.type)})", separator=" "
                )
            if type(value) is not val.type:
                value = self._checked(val, value, "output")
            outputs[name] = value
        return outputs

    def process(self, inputs: dict[str, Any], job: JobContext) -> Mapping[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.kind}({self.name})"


def _compatible(provided: Any, wanted: Any) -> bool:
    if provided == wanted or wanted in (object, Any) or provided in (object, Any):
        return True
    return provided is int and wanted is float


class EmptyTask(Task):
    """A task that does nothing: its outputs are the inputs it declares as outputs."""

    kind = "EmptyTask"

    def process(self, inputs: dict[str, Any], job: JobContext) -> Mapping[str, Any]:
        return inputs


class PythonTask(Task):
    """Python code as a task: a function whose parameters are its inputs, or source text.

    As a decorator::

        @PythonTask(inputs=[seed], outputs=[pi])
        def model(seed):
            return {"pi": ...}

    The function returns a dict of outputs by name, a tuple in the order of
    ``outputs``, or the bare value when there is one output. From source text,
    ``PythonTask("y = 2 * x", inputs=[x], outputs=[y])`` runs the text with the
    inputs as variables and reads the outputs back from them.
    """

    kind = "PythonTask"

    def __init__(
        self,
        code: Callable[..., Any] | str | None = None,
        *,
        inputs: Iterable[Val] | None = None,
        outputs: Iterable[Val] | None = None,
        defaults: Mapping[Val, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if code is not None and not (callable(code) or isinstance(code, str)):
            raise WorkflowError(f"PythonTask takes a function or source text, got {describe(code)}")
        if name is None and callable(code):
            name = getattr(code, "__name__", None)
        super().__init__(inputs, outputs, defaults, name)
        self.code = code
        self._compiled: Any = None

    def __call__(self, function: Callable[..., Any]) -> PythonTask:
        """The decorator form: ``@PythonTask(inputs=..., outputs=...)`` over a function."""
        if self.code is not None:
            raise WorkflowError(
                f"task {self.name} is already defined; to run it, put it in a workflow "
                f"(it is not called like a function)"
            )
        if not callable(function):
            raise WorkflowError(f"@PythonTask(...) decorates a function, got {describe(function)}")
        return PythonTask(
            function,
            inputs=self.inputs,
            outputs=self.outputs,
            defaults=self.defaults,
            name=self._name or getattr(function, "__name__", None),
        )

    def check_available(self, available: Mapping[str, Val]) -> None:
        if self.code is None:
            raise WorkflowError(
                f"PythonTask {self.name} has no code: decorate a function with it, or give source text"
            )
        if callable(self.code):
            names = {v.name for v in self.inputs}
            for param in inspect.signature(self.code).parameters.values():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                if param.name not in names and param.default is param.empty:
                    listed = ", ".join(sorted(names)) or "none"
                    raise WorkflowError(
                        f"PythonTask {self.name}: the function's parameter `{param.name}` is not "
                        f"one of the task's inputs (inputs: {listed}); add its Val to inputs=[...]"
                    )
        super().check_available(available)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled"] = None
        return state

    def process(self, inputs: dict[str, Any], job: JobContext) -> Mapping[str, Any]:
        if isinstance(self.code, str):
            if self._compiled is None:
                self._compiled = compile(self.code, f"<PythonTask {self.name}>", "exec")
            namespace: dict[str, Any] = {"__name__": f"__mole_task_{self.name}__", **inputs}
            exec(self._compiled, namespace)
            return namespace
        if self._compiled is None:
            params = inspect.signature(self.code).parameters.values()
            if any(p.kind is p.VAR_KEYWORD for p in params):
                self._compiled = _EVERY_INPUT  # def f(**inputs)
            else:
                self._compiled = tuple(p.name for p in params if p.kind is not p.VAR_POSITIONAL)
        if self._compiled is _EVERY_INPUT:
            return self._as_outputs(self.code(**inputs))
        kwargs = {name: inputs[name] for name in self._compiled if name in inputs}
        return self._as_outputs(self.code(**kwargs))

    def _as_outputs(self, result: Any) -> Mapping[str, Any]:
        if type(result) is dict or isinstance(result, Mapping):
            return result
        if not self.outputs:
            return {}
        if len(self.outputs) == 1:
            return {self.outputs[0].name: result}
        if isinstance(result, tuple) and len(result) == len(self.outputs):
            return {v.name: value for v, value in zip(self.outputs, result)}
        names = ", ".join(v.name for v in self.outputs)
        raise self.error(
            f"returned {describe(result)}",
            separator=" ",
            tail=f"; return a dict of its outputs ({names}) or a tuple of "
            f"{len(self.outputs)} values in that order",
        )
