"""cluster.yaml: typed models, loading with ${VAR} expansion, whole-config validation, planning."""

from ai_how.config.loader import ConfigInvalidError, LoadedConfig, load_config
from ai_how.config.models import ClusterConfig

__all__ = ["ClusterConfig", "ConfigInvalidError", "LoadedConfig", "load_config"]
