"""The bridge front door: plain ZeroMQ sockets and other clusters (DESIGN.md §10)."""
