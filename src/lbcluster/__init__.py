"""lbcluster: the Python side of a self-configuring HAProxy + Serf cluster."""

__version__ = "0.1.0"
