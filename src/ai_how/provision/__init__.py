"""Workstation VMs: base images, libvirt lifecycle, configuration of the booted nodes."""
