"""Prometheus exporters: SLURM (sinfo/squeue) and the pipeline's state store, served over HTTP."""
