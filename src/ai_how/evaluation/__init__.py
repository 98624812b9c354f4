"""Model evaluation through Oumi's custom evaluation backend (offline)."""
