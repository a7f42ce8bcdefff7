"""The Jupyter server extension: the OpenMOLE API proxied under Jupyter's own authentication.

Configuration is ``c.Mole...`` (see ``config.Mole``). With no ``url`` the
embedded server is started in the background (or an already running one is
reused) and the connection file that kernels read is written. Kernels also
learn Jupyter's root folder (``MOLE_JUPYTER_ROOT``), to tag executions with
notebook paths as the file browser shows them.

The pieces: ``config`` (the traits), ``backend`` (the backend's lifecycle and
the per-execution cache), ``handlers`` (thin routes over the backend), and
``app`` (the ExtensionApp that Jupyter loads, which wires them together).
"""
