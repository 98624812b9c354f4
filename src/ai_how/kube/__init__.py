"""Kubernetes on the cloud VMs: Kubespray bring-up, GPU operator, cluster health."""
