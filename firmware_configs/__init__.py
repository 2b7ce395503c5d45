"""The shipped device classes (``*.toml``) and fleets (``fleets/*.toml``), as package data.

No code: this file makes the directory a package so that wheels carry the files and
``agent.device_class`` finds them with ``importlib.resources`` wherever hyperfleet is installed.
"""
