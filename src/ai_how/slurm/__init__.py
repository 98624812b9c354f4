"""SLURM: command-line parsing, transports (local or SSH to a login node), sbatch scripts."""
