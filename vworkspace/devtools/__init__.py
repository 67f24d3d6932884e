"""Development commands: ``demo``, ``testenv`` and ``mock-control-plane``.

They drive the local test control plane (:mod:`vworkspace.testing`) and the mock vWorkspace
control plane (:mod:`vworkspace.mockcontrolplane`), so they live apart from the operator's
layers: nothing under ``api``, ``kube``, ``controllers``, ``engines``, ``webhooks``, ``agent`` or
``app`` imports this package (import-linter checks it), and ``python -m vworkspace`` imports a
command's module only when that command runs (:mod:`vworkspace.app.cli`).
"""
