"""Every metric, scrape job and label name the generated rules and dashboards use, in one place.

The exporters (``ai-how exporter slurm|pipeline``), the model server (``ai_how.serving``), MLflow's flask
exporter, node exporter and NVIDIA's DCGM exporter publish these names; rules, dashboards and scrape
configs refer to them only through this module, so a renamed metric is one edit here.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- scrape jobs

JOB_PROMETHEUS = "prometheus"
JOB_ALERTMANAGER = "alertmanager"
JOB_NODE = "node"  # node exporter on the workstation / HPC side
JOB_NODE_CLOUD = "node-exporter"  # kube-prometheus-stack's node exporter job
JOB_MLFLOW = "mlflow"
JOB_MODEL_SERVERS = "model-servers"
JOB_SLURM = "slurm"
JOB_PIPELINE = "pipeline"
JOB_DCGM = "dcgm"
JOB_FEDERATE = "federate-hpc"

NODE_JOBS = (JOB_NODE, JOB_NODE_CLOUD)

# --------------------------------------------------------------------------- labels

CLUSTER_LABEL = "cluster"  # set on every series of each side (external label and target label)
MODEL_TARGET_LABEL = "model"  # file_sd / PodMonitor target label of a model server
MODEL_NAME_LABEL = "model_name"  # KServe's label on the server's own histograms and gauges
SEVERITY_LABEL = "severity"

# --------------------------------------------------------------------------- generic

UP = "up"

# --------------------------------------------------------------------------- model server (ai_how.serving)

REQUESTS_TOTAL = "ai_how_requests_total"  # {route, method, code}
REQUESTS_IN_FLIGHT = "ai_how_requests_in_flight"
REQUEST_LATENCY = "request_predict_seconds"  # KServe's histogram {model_name}
TIME_TO_FIRST_TOKEN = "ai_how_time_to_first_token_seconds"  # histogram {model_name}
TIME_PER_OUTPUT_TOKEN = "ai_how_time_per_output_token_seconds"  # histogram {model_name}
REQUESTS_RUNNING = "ai_how_num_requests_running"  # {model_name}
REQUESTS_WAITING = "ai_how_num_requests_waiting"  # {model_name}
KV_CACHE_USAGE = "ai_how_kv_cache_usage_perc"  # {model_name}
GENERATION_TOKENS_TOTAL = "ai_how_generation_tokens_total"  # {model_name}
PROMPT_TOKENS_TOTAL = "ai_how_prompt_tokens_total"  # {model_name}
BATCH_SIZE = "ai_how_batch_size"  # histogram {model}
# our LLM engine's loop: mean decode batch = step rows / steps; device busy = device seconds per second
ENGINE_STEPS_TOTAL = "ai_how_engine_steps_total"  # {model_name}
ENGINE_STEP_ROWS_TOTAL = "ai_how_engine_step_rows_total"  # {model_name}
ENGINE_PREFILLS_TOTAL = "ai_how_engine_prefills_total"  # {model_name}
ENGINE_DEVICE_SECONDS_TOTAL = "ai_how_engine_device_seconds_total"  # {model_name, phase=decode|prefill}
ENGINE_WAIT_SECONDS_TOTAL = "ai_how_engine_wait_seconds_total"  # {model_name}

# --------------------------------------------------------------------------- SLURM exporter

SLURM_NODES = {state: f"slurm_nodes_{state}" for state in ("alloc", "idle", "mix", "down", "drain", "total")}
SLURM_CPUS = {state: f"slurm_cpus_{state}" for state in ("alloc", "idle", "total")}
SLURM_GPUS = {state: f"slurm_gpus_{state}" for state in ("alloc", "idle", "total")}
SLURM_QUEUE_PENDING = "slurm_queue_pending"
SLURM_QUEUE_RUNNING = "slurm_queue_running"
SLURM_PARTITION_JOBS_PENDING = "slurm_partition_jobs_pending"  # {partition}
SLURM_PARTITION_JOBS_RUNNING = "slurm_partition_jobs_running"  # {partition}
SLURM_SCRAPE_ERROR = "slurm_exporter_scrape_error"

# --------------------------------------------------------------------------- pipeline exporter

PIPELINE_RUNS = "ai_how_pipeline_runs"  # {status}
PIPELINE_STAGES = "ai_how_pipeline_stages"  # {stage, status}
PIPELINE_STAGE_DURATION = "ai_how_pipeline_stage_duration_seconds"  # histogram {stage}
PIPELINE_LAST_SUCCESS = "ai_how_pipeline_last_success_timestamp_seconds"  # {model}
PIPELINE_STAGE_FAILURES_TOTAL = "ai_how_pipeline_stage_failures_total"  # {stage}
MODEL_PRODUCTION_VERSION = "ai_how_model_production_version"  # {model}
SYNC_BYTES_TOTAL = "ai_how_sync_bytes_total"  # {model}
SYNC_FILES_TOTAL = "ai_how_sync_files_total"  # {model}
SYNC_FAILURES_TOTAL = "ai_how_sync_failures_total"  # {model}
TRAINING_LOSS = "ai_how_training_loss"  # {run, model}
TRAINING_SAMPLES_PER_SECOND = "ai_how_training_samples_per_second"  # {run, model}
TRAINING_STEP = "ai_how_training_step"  # {run, model}

# --------------------------------------------------------------------------- node exporter

NODE_CPU_SECONDS_TOTAL = "node_cpu_seconds_total"
NODE_MEMORY_AVAILABLE = "node_memory_MemAvailable_bytes"
NODE_MEMORY_TOTAL = "node_memory_MemTotal_bytes"
NODE_FILESYSTEM_AVAILABLE = "node_filesystem_avail_bytes"
NODE_FILESYSTEM_SIZE = "node_filesystem_size_bytes"
NODE_LOAD1 = "node_load1"

# --------------------------------------------------------------------------- DCGM exporter (GPU Operator)

DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
DCGM_POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"  # W
DCGM_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"  # degrees C
DCGM_XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"  # the last XID error code

# --------------------------------------------------------------------------- MLflow (flask exporter)

MLFLOW_REQUESTS_TOTAL = "mlflow_http_request_total"  # measured: MLflow 3.17 prefixes the flask exporter's names  # {method, status}
MLFLOW_REQUEST_DURATION = "mlflow_http_request_duration_seconds"  # histogram {method, mlflow_version, status}

# --------------------------------------------------------------------------- recording rules

REC_REQUEST_LATENCY_P95 = "job:ai_how_request_latency_seconds:p95"
REC_REQUEST_RATE = "job:ai_how_requests:rate5m"
REC_REQUEST_ERROR_RATIO = "job:ai_how_request_errors:ratio_rate5m"
REC_GENERATION_TOKENS_RATE = "job:ai_how_generation_tokens:rate5m"
REC_SLURM_GPUS_ALLOC_RATIO = "job:slurm_gpus_alloc:ratio"
REC_SLURM_CPUS_ALLOC_RATIO = "job:slurm_cpus_alloc:ratio"
REC_NODE_CPU_UTILISATION = "instance:node_cpu_utilisation:rate5m"
REC_NODE_MEMORY_UTILISATION = "instance:node_memory_utilisation:ratio"


def bucket(histogram: str) -> str:
    """The ``_bucket`` series of a histogram."""
    return f"{histogram}_bucket"
