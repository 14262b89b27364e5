"""Backends: one module or package per route, behind the protocol in ``ftbroker.backends.base``."""
