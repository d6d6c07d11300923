"""pystack: an eBPF/XDP-offloaded hybrid TCP stack with a Python control plane."""

__version__ = "0.1.0"
