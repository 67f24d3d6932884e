"""The REST room: talking to the API server.

The transport (one aiohttp session, TLS, proxies), how the connection is configured (kubeconfig,
in-cluster, exec plugins, auth providers) and authenticated, typed errors, resource types and
paths, discovery, and the client with its small :class:`~vworkspace.kube.rest.api.KubeApi`
protocol that everything above depends on. Imports nothing from ``cache`` or ``runtime``.
"""
