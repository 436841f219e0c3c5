"""lbcluster: the Python side of a self-configuring HAProxy + Serf cluster."""

import time

__version__ = "0.1.0"

# When the process started importing the package, before any heavy import:
# the handler measures "event received -> new config live" from here.
STARTED = time.monotonic()
