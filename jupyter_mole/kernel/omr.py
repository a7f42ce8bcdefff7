"""OpenMOLE's ``.omr`` result files, read into pandas.

OpenMOLE 15+ writes method results as an index file (``x.omr``: gzip-compressed
JSON naming the variables and the data files) beside a ``.omr-data`` folder of
gzip-compressed JSON data files. In "create" mode a data file holds one array
per section, one value per variable (often arrays: one element per result); in
"append" mode it holds one such entry per save, separated by ``,\\n``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = ["data_file", "read_omr"]


def _text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def data_file(path: Path) -> str:
    """The data file an index names (relative to the index's folder, ``/``-separated)."""
    try:
        name = json.loads(_text(path))["data-file"][-1]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path.name} is not an OpenMOLE .omr result we can read ({e})") from None
    if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"{path.name}: its data file {name!r} is not inside its folder")
    return name


def read_omr(path: Path, section: int = 0) -> pandas.DataFrame:
    """The rows of one section of an OpenMOLE result (the first by default)."""
    import pandas

    try:
        index = json.loads(_text(path))
        sections = index["data-content"]["section"]
        names = [v["name"] for v in sections[section]["variables"]]
        data_file = path.parent / index["data-file"][-1]
        mode = index.get("data-mode", "create")
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path.name} is not an OpenMOLE .omr result we can read ({e})") from None
    try:
        content = _text(data_file)
    except OSError:
        raise ValueError(
            f"{path.name}: its data file {data_file.name} is missing; download the "
            f"{data_file.parent.name} folder with it"
        ) from None
    if mode == "append":
        entries: list[Any] = json.loads("[" + content + "]")
        return pandas.DataFrame([entry[section] for entry in entries], columns=names)
    values = json.loads(content)[section]
    if values and all(isinstance(v, list) for v in values):
        lengths = {len(v) for v in values}
        if len(lengths) == 1:  # one array per variable, one element per result
            return pandas.DataFrame(dict(zip(names, values)))
    return pandas.DataFrame([values], columns=names)
