"""Deployers put a synced model version behind an endpoint: a local server or KServe."""
