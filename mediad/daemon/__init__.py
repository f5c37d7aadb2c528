"""The watch-folder daemon: intake, a durable SQLite queue, worker processes, systemd and metrics.

Dependencies point daemon -> media; nothing in mediad.media imports from here.
"""
