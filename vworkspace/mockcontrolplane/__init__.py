"""A mock of the vWorkspace control plane's agent and admin API (shared/spec/pull-protocol.md §10).

For development and tests: in memory, state lost on exit. It speaks the same wire protocol as
the real control plane and shares nothing with the operator but that protocol. Two improvements
over the Go mock (docs/mock-control-plane.md): the long poll wakes the moment a job is enqueued
(no 25 ms polling loop), and a job delivered but never answered is delivered again after a
visibility timeout, so an agent that crashes mid-job cannot lose work.
"""

from vworkspace.mockcontrolplane.server import create_app
from vworkspace.mockcontrolplane.state import Fault, MockState
from vworkspace.mockcontrolplane.testserver import AdminClient, MockControlPlane

__all__ = ["AdminClient", "Fault", "MockControlPlane", "MockState", "create_app"]
