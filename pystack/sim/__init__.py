"""pystack.sim: an in-memory network with a deterministic clock and seeded faults."""

from pystack.sim.apps import StreamApp, accept_into
from pystack.sim.network import LinkConfig, SimNetwork, copy_segment

__all__ = ["LinkConfig", "SimNetwork", "StreamApp", "accept_into", "copy_segment"]
