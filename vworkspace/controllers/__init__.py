"""One controller per kind: applicationinstance, operation, cluster (also the ``controller``
label of the metrics). Each is a ``reconcile(key) -> Result`` over the informer cache."""
