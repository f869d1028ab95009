"""Family specs: one module per model family, each declaring its family and presets to
:mod:`vitedge.models.registry` (:func:`~vitedge.models.registry.register_family`,
:func:`~vitedge.models.registry.register_preset`). They import nothing but the registry (no torch): the model class
is named by ``"module:Class"`` and imported only when a model is built. Every module here is imported by
:func:`vitedge.models.registry.load_builtin_families`, in name order; a new family needs its model module
(``vitedge/models/<family>.py``) and a spec here, nothing else.
"""
