"""Kubespray: the inventory and group_vars from the config, obtaining it, and running cluster.yml."""
