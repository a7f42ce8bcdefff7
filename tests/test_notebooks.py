"""The worked notebooks of ``notebooks/``, run from top to bottom as a person would.

Each runs with nbclient in a temporary copy of ``notebooks/``, on a kernel of
this very Python, with Jupyter's directories isolated: nothing is configured,
so the magics start the embedded server (one for the module, stopped at the
end). Then what the notebooks claim is checked against what they produced:
the result files they downloaded, the statistics they show, their figures.
``remote.ipynb`` runs twice: without a remote server (its remote cells only
print a note) and against a ``jupyter-mole serve`` started here as the remote.
"""

from __future__ import annotations

import base64
import importlib.util
import math
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from jupyter_mole.client import MoleClient
from jupyter_mole.connection import FILE_NAME, read_connection_file
from tests.kernels import install_python_kernel, isolate_jupyter, stop_embedded
from tests.servers import PASSWORD, ServerProcess
from tests.test_notebook_magic import WIDGET_STATE, WIDGET_VIEW, outputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TITLE = re.compile(r"<b>(\S+)</b> <code>(\S+)</code>")  # the widget's title
NOTE = "no remote server: set OPENMOLE_URL (and OPENMOLE_PASSWORD_FILE) to run this cell"
REMOTE_VARIABLES = ("OPENMOLE_URL", "OPENMOLE_PASSWORD_FILE", "OPENMOLE_FINGERPRINT")


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Isolated Jupyter directories, a ``python3`` kernel that is this Python, no remote set."""
    root = tmp_path_factory.mktemp("notebooks-jupyter")
    with pytest.MonkeyPatch.context() as patch:
        dirs = isolate_jupyter(patch, root / "jupyter")
        install_python_kernel(dirs["data"])
        patch.setenv("IPYTHONDIR", str(root / "ipython"))
        patch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: PNG figures
        for name in REMOTE_VARIABLES:
            patch.delenv(name, raising=False)
        try:
            yield dirs
        finally:
            stop_embedded(dirs["runtime"])


Run = Callable[..., tuple[Path, Any]]


@pytest.fixture
def run(jupyter: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run("quickstart.ipynb")``: execute it in a fresh copy of notebooks/; (folder, notebook)."""

    def execute(name: str, env: dict[str, str] | None = None) -> tuple[Path, Any]:
        folder = tmp_path / "notebooks"
        shutil.copytree(
            NOTEBOOKS,
            folder,
            ignore=shutil.ignore_patterns("mole-*", ".ipynb_checkpoints", "__pycache__"),
        )
        notebook = folder / name
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells)
        monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # as Jupyter tells its kernels
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        NotebookClient(
            nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(folder)}}
        ).execute()
        return folder, nb

    return execute


def cell(nb: Any, start: str) -> Any:
    """The one code cell whose source starts with ``start``."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start)]
    assert len(found) == 1, f"{len(found)} cells start with {start!r}"
    return found[0]


def execution_of(nb: Any, start: str, script: str) -> str:
    """The id of the execution a ``%%mole`` cell started, read from the widget it showed."""
    text, data = outputs(cell(nb, start))
    assert WIDGET_VIEW in data, text  # the live view, not text progress
    models = nb.metadata["widgets"][WIDGET_STATE]["state"]

    def child(model_id: str, index: int) -> str:
        return models[model_id]["state"]["children"][index].removeprefix("IPY_MODEL_")

    box = data[WIDGET_VIEW]["model_id"]
    title = models[child(child(box, 0), 0)]["state"]["value"]
    match = TITLE.fullmatch(title)
    assert match is not None and match.group(1) == script, title
    if "text/plain" in data and data["text/plain"].startswith("<Execution"):  # the cell's value
        assert data["text/plain"] == f"<Execution {match.group(2)} {script}>"
    return match.group(2)


def finished_bars(nb: Any) -> list[tuple[int, int, str]]:
    """Every progress bar of the notebook's widgets, as the front end would draw it."""
    models = nb.metadata["widgets"][WIDGET_STATE]["state"].values()
    bars = [m["state"] for m in models if m["state"].get("_model_name") == "IntProgressModel"]
    return [(b["value"], b["max"], b["bar_style"]) for b in bars]


def figure(nb: Any, start: str) -> bytes:
    """The PNG a cell drew (matplotlib's inline backend), checked to be a real picture."""
    _, data = outputs(cell(nb, start))
    assert "image/png" in data, sorted(data)
    png = base64.b64decode(data["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 400 and height >= 200, (width, height)
    return png


def downloaded(folder: Path, execution: str, name: str) -> pd.DataFrame:
    """A result file the notebook downloaded: beside it, in a folder named after the execution."""
    path = folder / f"mole-{execution[:8]}" / name
    assert path.is_file(), sorted(p.name for p in folder.iterdir())
    return pd.read_csv(path)


def test_quickstart_estimates_pi_and_plots_every_replication(jupyter: dict, run: Run) -> None:
    folder, nb = run("quickstart.ipynb")
    assert outputs(cell(nb, "%load_ext jupyter_mole")) == ("", {})
    recorded = read_connection_file(jupyter["runtime"] / FILE_NAME)
    assert recorded is not None and recorded.kind == "embedded"  # nothing was configured
    assert outputs(cell(nb, "%mole status"))[0].startswith(
        f"connected to jupyter-mole (ours) at {recorded.url} (embedded server"
    )

    # the %%mole cell wrote notebooks/pi.oms exactly as committed: running it changes nothing
    assert (folder / "pi.oms").read_text() == (NOTEBOOKS / "pi.oms").read_text()
    first = execution_of(nb, "%%mole pi.oms -o run", "pi.oms")
    result = downloaded(folder, first, "result.csv")
    assert list(result.columns) == ["pi_avg", "pi_med"] and len(result) == 1
    assert result.pi_avg[0] == pytest.approx(math.pi, abs=0.02)  # sd of the mean: 0.0016
    assert result.pi_med[0] == pytest.approx(math.pi, abs=0.05)
    shown = outputs(cell(nb, "result = run.results"))[1]["text/html"]
    assert "pi_avg" in shown and f"{result.pi_avg[0]:.6f}"[:5] in shown
    text = outputs(cell(nb, "import math"))[0]
    assert f"mean of the 100 estimates:   {result.pi_avg[0]:.4f}" in text
    assert f"median of the 100 estimates: {result.pi_med[0]:.4f}" in text

    second = execution_of(nb, "%%mole pi_replications.oms", "pi_replications.oms")
    replications = downloaded(folder, second, "replications.csv")
    assert list(replications.columns) == ["seed", "pi"] and len(replications) == 100
    assert replications.seed.nunique() == 100
    assert replications.pi.mean() == pytest.approx(math.pi, abs=0.02)
    assert replications.pi.between(2.9, 3.4).all()
    described = outputs(cell(nb, "replications = every.results"))[1]["text/plain"]
    assert "count    100.000000" in described
    assert f"mean       {replications.pi.mean():.6f}" in described
    figure(nb, "import matplotlib.pyplot as plt")

    # both runs ended, their widgets full and green; %mole list shows both, finished
    assert finished_bars(nb) == [(100, 100, "success"), (100, 100, "success")]
    listing = outputs(cell(nb, "%mole list"))[0]
    assert re.search(rf"^{first}\s+finished\s+pi\.oms\s+100/100\s", listing, re.M), listing
    assert re.search(rf"^{second}\s+finished\s+pi_replications\.oms\s+100/100\s", listing, re.M)


def _fire_model() -> Any:
    spec = importlib.util.spec_from_file_location("fire", NOTEBOOKS / "model" / "fire.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_runs_the_external_model_on_a_grid_and_draws_a_heat_map(run: Run) -> None:
    folder, nb = run("sweep.ipynb")
    assert "--density" in outputs(cell(nb, "!python3 model/fire.py --help"))[0]
    execution = execution_of(nb, "%%mole fire.oms", "fire.oms")
    fire = downloaded(folder, execution, "fire.csv")
    assert list(fire.columns) == ["density", "spread", "burned"]
    densities = [round(0.4 + 0.05 * i, 2) for i in range(13)]
    spreads = [0.6, 0.7, 0.8, 0.9, 1.0]
    assert len(fire) == 13 * 5
    assert sorted(set(fire.density)) == densities  # exact values: no 0.30000000000000004
    assert sorted(set(fire.spread)) == spreads
    assert fire.burned.between(0, 1).all()

    # each row is what the program computes for that point (its seed is the default, 42)
    model = _fire_model()
    for density, spread in [(0.4, 0.6), (0.6, 0.9), (0.75, 0.7), (0.9, 0.8), (1.0, 1.0)]:
        (row,) = fire[(fire.density == density) & (fire.spread == spread)].itertuples()
        assert row.burned == model.burn(density, spread, 42), (density, spread)
    assert fire.burned.min() < 0.1 and fire.burned.max() == 1.0  # both sides of the threshold
    assert finished_bars(nb) == [(130, 130, "success")]  # two tasks per point

    # the pivoted table and the heat map
    grid = outputs(cell(nb, "fire = sweep.results"))[1]["text/html"]
    assert grid.count("<tr>") >= 5 + 1 and "0.95" in grid
    figure(nb, "import matplotlib.pyplot as plt")


def test_replication_statistics_are_those_of_the_raw_replications(run: Run) -> None:
    folder, nb = run("replication.ipynb")
    execution = execution_of(nb, "%%mole convergence.oms", "convergence.oms")
    statistics = downloaded(folder, execution, "statistics.csv")
    raw = downloaded(folder, execution, "replications.csv")
    points = [100, 300, 1_000, 3_000, 10_000, 30_000]
    assert list(statistics.columns) == ["points", "pi_mean", "pi_median", "pi_std"]
    assert sorted(statistics.points) == points
    assert list(raw.columns) == ["points", "seed", "pi"]
    assert raw.groupby("points").size().to_dict() == dict.fromkeys(points, 40)

    # distribution_seed=2024: the seeds are the ones it draws, the same for every point
    rng = random.Random(2024)
    seeds = {rng.randrange(2**31) for _ in range(40)}
    assert all(set(group.seed) == seeds for _, group in raw.groupby("points"))
    one = raw.iloc[0]
    again = random.Random(int(one.seed))
    inside = sum(again.random() ** 2 + again.random() ** 2 < 1 for _ in range(int(one.points)))
    assert one.pi == 4 * inside / one.points  # a raw row is the model's own answer

    # the error bars are the statistics pandas computes from the raw replications
    by_pandas = raw.groupby("points")["pi"].agg(["mean", "median", "std"])
    ours = statistics.set_index("points").loc[by_pandas.index]
    np.testing.assert_allclose(ours.pi_mean, by_pandas["mean"], rtol=1e-12)
    np.testing.assert_allclose(ours.pi_median, by_pandas["median"], rtol=1e-12)
    np.testing.assert_allclose(ours.pi_std, by_pandas["std"], rtol=1e-12)
    assert outputs(cell(nb, "import numpy as np"))[1]["text/plain"] == "True"
    shown = outputs(cell(nb, "statistics = study.results"))[1]["text/html"]
    assert f"{ours.pi_std.iloc[0]:.6f}" in shown

    # and they behave as the theory says: the spread falls as 1/sqrt(n)
    theory = np.sqrt(math.pi * (4 - math.pi) / ours.index.to_numpy())
    ratio = ours.pi_std.to_numpy() / theory
    assert ((ratio > 0.5) & (ratio < 1.6)).all(), ratio
    assert abs(ours.pi_mean.iloc[-1] - math.pi) < 0.02
    assert finished_bars(nb) == [(240, 240, "success")]
    figure(nb, "import math")


def test_remote_without_a_server_only_prints_notes(run: Run) -> None:
    folder, nb = run("remote.ipynb")
    texts = [outputs(c)[0] for c in nb.cells if c.cell_type == "code"]
    assert texts[0] == NOTE + "\n"
    assert (
        sum(t == NOTE + "\n" for t in texts) == 6
    )  # the first, connect, client, send, results, list
    assert not (folder / "pi_remote.oms").exists()
    assert not list(folder.glob("mole-*"))
    assert "widgets" not in nb.metadata  # no execution, no widget


def test_remote_against_a_jupyter_mole_server(
    run: Run, start_server: Callable[..., ServerProcess], jupyter: dict
) -> None:
    server = start_server()  # HTTPS with a self-signed certificate, and a password
    assert server.fingerprint
    folder, nb = run(
        "remote.ipynb",
        env={
            "OPENMOLE_URL": server.url,
            "OPENMOLE_PASSWORD_FILE": str(server.state_dir / "password.txt"),
            "OPENMOLE_FINGERPRINT": server.fingerprint,
        },
    )
    assert outputs(cell(nb, "import os"))[0] == f"remote server: {server.url}\n"
    connected = outputs(cell(nb, "if URL:\n    options"))[0]
    assert connected.startswith(f"connected to jupyter-mole (ours) at {server.url} (%mole connect)")
    assert outputs(cell(nb, "from jupyter_mole.client"))[0] == (
        "jupyter-mole: 0 execution(s) on the server\n"
    )

    # the Python dialect went to that server (a jupyter-mole one), and ran there
    execution = execution_of(nb, "if URL:\n    source", "pi_remote.oms")
    assert (folder / "pi_remote.oms").read_text() == (NOTEBOOKS / "pi.oms").read_text()
    with MoleClient(server.url, PASSWORD, fingerprint=server.fingerprint) as client:
        (info,) = client.list(details=True)
        assert info.id == execution and info.state == "finished"
        assert info.script == "pi_remote.oms" and info.completed == 100
        assert info.tags == {"notebook": str(folder / "remote.ipynb")}
    embedded = read_connection_file(jupyter["runtime"] / FILE_NAME)
    if embedded is not None:  # the embedded server, if other notebooks started it, got nothing
        with MoleClient(embedded.url, embedded.password) as local:
            assert execution not in local.list()

    result = downloaded(folder, execution, "result.csv")
    assert list(result.columns) == ["pi_avg", "pi_med"]
    assert result.pi_avg[0] == pytest.approx(math.pi, abs=0.02)
    shown = outputs(cell(nb, "if URL:\n    remote_result"))[1]["text/html"]
    assert "pi_avg" in shown
    listing = outputs(cell(nb, "if URL:\n    %mole list"))[0]
    assert re.search(rf"^{execution}\s+finished\s+pi_remote\.oms\s+100/100\s", listing, re.M)
    assert finished_bars(nb) == [(100, 100, "success")]
