"""Container images ai-how builds with the host's podman, buildah or docker (the model server's)."""
