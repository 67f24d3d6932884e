"""Engines: what turns an ApplicationInstance or an Operation into foreign objects (Flux, Velero)
and reads their progress back. Reconcilers choose an engine by name from the registry and never
know the foreign kinds; a new engine plugs in by registering itself."""
