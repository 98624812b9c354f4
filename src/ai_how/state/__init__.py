"""The one state store (clusters, GPU ownership, pipeline runs)."""

from ai_how.state.store import FORMAT_VERSION, StateStore, default_state_dir

__all__ = ["FORMAT_VERSION", "StateStore", "default_state_dir"]
