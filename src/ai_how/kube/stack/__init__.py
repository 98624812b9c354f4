"""``ai-how cloud stack``: the MLOps stack on the cloud cluster, rendered from the config as plain YAML
(GitOps-friendly) plus pinned Helm charts with values, and applied, waited for, shown and removed."""
