"""The response headers that say which model and version answered (every route, every server)."""

NAME_HEADER = "x-ai-how-model-name"
VERSION_HEADER = "x-ai-how-model-version"
