"""hyperfleet edge agent daemon."""
