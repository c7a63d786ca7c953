"""The one place Fleetlet's version is written: packaging, ``--version``, ``run.py status`` and the
device's state report all read it here, so they cannot disagree."""

__version__ = "0.1.0"
