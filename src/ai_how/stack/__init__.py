"""`ai-how stack up|down|status`: the local MLOps services."""
