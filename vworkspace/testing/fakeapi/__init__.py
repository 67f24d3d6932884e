"""An in-memory API server with real semantics, for unit tests: :class:`FakeApi`.

``FakeApi`` implements :class:`~vworkspace.kube.rest.api.KubeApi` at the *request* level: it
reads the REST path of every :meth:`~FakeApi.request` and :meth:`~FakeApi.stream_lines` call, so
the real verbs (:class:`~vworkspace.kube.rest.api.RestVerbs`), the real informer and everything
above them run unchanged against it; only the transport is fake. Failures are ``Status`` bodies
as kube-apiserver sends them, turned into the same typed errors (kube/rest/errors.py).

What it does, a **subset** of the API server:

* **resourceVersion** is one counter for all kinds (etcd's revision); every stored write bumps
  it; a write that changes nothing is not stored (no new resourceVersion, no watch event).
  ``metadata.generation`` starts at 1 and grows when anything but metadata and status changes
  (every kind carries it). ``uid`` and ``creationTimestamp`` are set on create, from a counter
  and the injected clock (a :class:`~vworkspace.kube.clock.FakeClock` by default), so runs are
  repeatable. ``generateName`` gets a counter suffix.
* **Errors**: 404 NotFound (object, or a path that names no resource); 409 AlreadyExists on
  create; 409 Conflict when a PUT, merge patch or apply carries a ``metadata.resourceVersion``
  other than the stored one; 410 for a watch from a compacted resourceVersion (an ERROR event,
  as the server sends it; compaction happens only at :meth:`~FakeApi.compact`); 422 for an
  object without a name and for a new finalizer on an object being deleted; 400 for a body
  that is not an object, a name or namespace that disagrees with the URL, a selector it
  cannot read; 415 for JSON patch and strategic merge patch (not supported).
* **Status subresource** for every kind except those in ``without_status`` (ConfigMaps,
  Secrets, Events, Leases, RBAC, ...): writes to ``/status`` change only ``status``; writes to
  the main resource (and create) never change ``status``.
* **JSON merge patch** (RFC 7386) on PATCH with ``application/merge-patch+json``.
* **Server-side apply** (``application/apply-patch+yaml``, the body JSON), a subset: each field
  manager owns the fields it last applied (leaf paths; lists are atomic except
  ``metadata.finalizers``, a set); applying merges maps, replaces lists, removes fields the
  manager no longer applies (unless another manager also owns them), creates a missing object;
  a field another *applier* owns with a different value is a 409 with ``causes`` naming it,
  unless ``force=true``. Not done: ownership by non-apply writes (updates and merge patches
  take no fields, so they never conflict), ``listType=map`` merging (conditions, containers),
  ``managedFields`` in the object.
* **Deletion**: an object with finalizers gets ``deletionTimestamp`` and stays until a write
  removes its last finalizer, then it is gone (a DELETED event). Not done: ownerReference
  garbage collection, foreground/orphan propagation, DeleteOptions preconditions, Namespace
  lifecycle (objects may be created in Namespaces that do not exist).
* **List**: by namespace (or all), ``labelSelector`` (equality, inequality, existence, set),
  ``fieldSelector`` on ``metadata.name``/``metadata.namespace``, ``limit``/``continue`` (the
  pages are of the current state, not a snapshot), the list's resourceVersion.
* **Watch** (:meth:`~FakeApi.stream_lines`): ADDED/MODIFIED/DELETED after the requested
  resourceVersion (from "0" or none: the current objects as ADDED first), through the namespace
  and selector (an object leaving the selector is DELETED, entering it ADDED); BOOKMARK lines at
  :meth:`~FakeApi.bookmark` for watches that allow them; the stream ends after
  ``timeoutSeconds`` on the fake's clock, at :meth:`~FakeApi.break_watches` (a dropped
  connection) and at :meth:`~FakeApi.close`.
* **Test controls**: :attr:`~FakeApi.writes` records every write request (method, resource,
  key, subresource, body and the status code answered), :meth:`~FakeApi.fail_next` makes the
  next matching request fail once, :meth:`~FakeApi.add` and :meth:`~FakeApi.set_status` seed
  objects and status as other controllers would, :meth:`~FakeApi.stored` reads without a
  request, :meth:`~FakeApi.respond` answers a non-resource endpoint.

Not modelled at all: authentication and RBAC, admission (webhooks, defaults, OpenAPI
validation), API discovery, field selectors beyond name and namespace, dry run.
"""

from vworkspace.testing.fakeapi.server import FakeApi, Write

__all__ = ["FakeApi", "Write"]
