"""WSOL methods: the plug-in contract (:mod:`.base`) and the method registry.

Every method, the paper's own (``ours1``, ``ours2``) included, is registered through
the ``wsolbench.methods`` entry-point group, so a built-in method and an outside plug-in
take the same path. ``METHODS.get(name)`` imports only the module of that method.
"""

from wsolbench.methods.base import FitContext, LocalizeOutput, WSOLMethod
from wsolbench.registry import Registry

METHODS: Registry[type[WSOLMethod]] = Registry("method", entry_point_group="wsolbench.methods")

__all__ = ["METHODS", "FitContext", "LocalizeOutput", "WSOLMethod"]
