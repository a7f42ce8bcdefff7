"""Dask-backed runtimes for the environments a script names.

``dsl.environments`` says what the user asked for; this package makes it run.
Each kind of environment maps to a way of getting a Dask client; chunking,
counting and resubmission are the same for all (``runtime.py``).
"""

from __future__ import annotations

from .cluster import ClusterConnection, LocalClusterManager
from .runtime import ChunkSizer, EnvironmentRuntime

__all__ = ["ChunkSizer", "ClusterConnection", "EnvironmentRuntime", "LocalClusterManager"]
