"""The OpenMOLE-compatible REST server (tornado): routes, auth, TLS, `jupyter-mole serve`."""
