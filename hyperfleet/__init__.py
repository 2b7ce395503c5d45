"""hyperfleet: the one CLI and the local-stack launcher (broker, demo)."""
