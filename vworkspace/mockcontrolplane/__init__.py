"""A mock of the vWorkspace control plane's agent and admin API.

For development and tests: in memory, state lost on exit. It speaks the same wire protocol as
the real control plane and shares nothing with the operator but that protocol (docs/pull-mode.md,
"The mock control plane" and "Mock endpoints"). Two improvements over the Go mock: the long poll
wakes the moment a job is enqueued (no 25 ms polling loop), and a job delivered but never
answered is delivered again after a visibility timeout, so an agent that crashes mid-job cannot
lose work.
"""

from vworkspace.mockcontrolplane.server import create_app
from vworkspace.mockcontrolplane.state import Fault, MockState
from vworkspace.mockcontrolplane.testserver import AdminClient, MockControlPlane

__all__ = ["AdminClient", "Fault", "MockControlPlane", "MockState", "create_app"]
