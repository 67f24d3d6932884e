"""The operator's public API: attrs models of its custom resources, conditions and constants.

Everything here is pure (no I/O). The models are the single source of truth: the CRD manifests
under ``manifests/crds`` are generated from them (:mod:`vworkspace.api.crdgen`), and a test fails
when the committed YAML drifts from what the models generate.
"""
