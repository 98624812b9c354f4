"""MLflow on the cluster: the community chart (pinned mlflow 1.11.5, MLflow 3.15) with values from the
config: PostgreSQL backend and S3 artifacts (credentials by Secret reference), the Ingress on the
configured host, a ServiceMonitor, placement and resources. Every key exists in the chart's defaults."""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.kube.helm import HelmChart
from ai_how.kube.stack import objectstore, postgresql
from ai_how.kube.stack.common import (
    COMPONENT_LABEL,
    MLFLOW_RELEASE,
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    postgres_secret_name,
    resources,
    s3_secret,
    service_host,
    stack,
)
from ai_how.kube.stack.common import node_selector as node_selector_for
from ai_how.kube.stack.common import tolerations as tolerations_for

COMPONENT = "mlflow"
CHART_VERSION = "1.11.5"


def mlflow_chart(config: ClusterConfig) -> HelmChart:
    return HelmChart(
        release=MLFLOW_RELEASE,
        chart="mlflow",
        version=CHART_VERSION,
        repo="https://community-charts.github.io/helm-charts",
        namespace=stack(config).namespace,
    )


def mlflow_values(config: ClusterConfig) -> dict[str, Any]:
    pg = config.mlops.postgresql
    store = config.mlops.object_store
    kube = stack(config)
    return {
        "extraPodLabels": {COMPONENT_LABEL: COMPONENT},
        "backendStore": {
            "databaseMigration": True,
            "databaseConnectionCheck": True,
            "postgres": {
                "enabled": True,
                "host": service_host(config, POSTGRES_SERVICE),
                "port": POSTGRES_PORT,
                "database": pg.database,
                "user": pg.username,
                "driver": "psycopg2",
            },
            "existingDatabaseSecret": {
                "name": postgres_secret_name(config),
                "usernameKey": postgresql.USERNAME_KEY,
                "passwordKey": postgresql.PASSWORD_KEY,
            },
        },
        "artifactRoot": {
            "proxiedArtifactStorage": True,
            "s3": {
                "enabled": True,
                "bucket": store.buckets.artifacts,
                "existingSecret": {
                    "name": s3_secret(config),
                    "keyOfAccessKeyId": "AWS_ACCESS_KEY_ID",
                    "keyOfSecretAccessKey": "AWS_SECRET_ACCESS_KEY",
                },
            },
        },
        "extraEnvVars": {
            "MLFLOW_S3_ENDPOINT_URL": objectstore.in_cluster_endpoint(config),
            "AWS_DEFAULT_REGION": store.region,
        },
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": kube.mlflow_host, "paths": [{"path": "/", "pathType": "Prefix"}]}],
        },
        "serviceMonitor": {"enabled": kube.service_monitors, "namespace": kube.monitoring_namespace},
        "nodeSelector": node_selector_for(config, COMPONENT),
        "tolerations": tolerations_for(config, COMPONENT),
        "resources": resources(config, COMPONENT),
    }
