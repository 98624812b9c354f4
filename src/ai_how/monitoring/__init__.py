"""Observability: exporters, generated Prometheus/Alertmanager/Grafana configuration, health status."""
