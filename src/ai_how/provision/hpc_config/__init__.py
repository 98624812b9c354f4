"""The HPC side inside the VMs: SLURM configs and an Ansible playbook generated from the cluster config.

- :mod:`.slurm_conf`: ``slurm.conf`` and ``gres.conf`` from ``clusters.hpc``;
- :mod:`.munge`: the cluster's munge key, made once;
- :mod:`.playbook`: inventory, variables and the static playbook written to one folder;
- :mod:`.ansible_run`: ``ansible-playbook`` run over SSH, its failure named by task.
"""

from ai_how.provision.hpc_config.ansible_run import run_playbook
from ai_how.provision.hpc_config.munge import ensure_munge_key
from ai_how.provision.hpc_config.playbook import SlurmPlaybook, write_playbook

__all__ = ["SlurmPlaybook", "ensure_munge_key", "run_playbook", "write_playbook"]
