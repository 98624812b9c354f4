"""Base images of the workstation VMs: recipes per role, the mmdebstrap build, the Packer template.

``recipes`` says what goes into an image (and its content address), ``build`` makes the qcow2 with
mmdebstrap on a loop device (``disk`` holds the loop/mount steps), ``artifacts`` keeps the built
images, their manifests and the stable link, ``packer`` writes the equivalent Packer template.
"""
