"""Baseline WSOL methods, registered through the wsolbench.methods entry-point group."""
