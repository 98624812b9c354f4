"""`ai-how exporter slurm` against the real one-node SLURM: what it serves equals what sinfo/squeue say,
a submitted job shows up in the queue and its partition, and an unreachable SLURM is a 200 with
slurm_exporter_scrape_error 1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ai_how.monitoring.exporters.slurm_state import gpu_count, node_state_group, parse_squeue
from ai_how.procs import free_port, wait_port
from tests.services import AI_HOW, SSHServer, make_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[int, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        status, text = response.status, response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return status, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


@contextmanager
def exporter(tmp_path: Path, env: dict[str, str] | None = None, *args: str) -> Iterator[int]:
    """The real `ai-how exporter slurm` process on a free port; it must stop cleanly on SIGTERM."""
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [AI_HOW, "exporter", "slurm", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_port(port, timeout_s=60)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


def sinfo(fmt: str) -> str:
    return subprocess.run(["sinfo", "-h", "-o", fmt], check=True, capture_output=True, text=True).stdout


def test_totals_equal_what_sinfo_reports(tmp_path: Path, slurm: None) -> None:
    with exporter(tmp_path) as port:
        status, samples = scrape(port)
    assert status == 200
    assert value(samples, "slurm_exporter_scrape_error") == 0
    nodes = sum(int(n) for n in sinfo("%D").split())
    alloc, idle, other, total = (int(n) for n in sinfo("%C").split()[0].split("/"))
    assert value(samples, "slurm_nodes_total") == nodes
    assert (value(samples, "slurm_cpus_alloc"), value(samples, "slurm_cpus_idle")) == (alloc, idle)
    assert (value(samples, "slurm_cpus_other"), value(samples, "slurm_cpus_total")) == (other, total)
    # GPUs come from the nodes' GRES (scripts/slurm-local.sh configures gpu:N with File=/dev/null).
    gres = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %G"], check=True, capture_output=True, text=True
    ).stdout
    gpus = {
        name: int(m.group(1))
        for name, g in (line.split() for line in gres.splitlines())
        if (m := re.search(r"gpu:(?:[^:,(]+:)?(\d+)", g))
    }
    assert value(samples, "slurm_gpus_total") == sum(gpus.values()) >= 1
    assert value(samples, "slurm_partition_cpus_total", partition="debug") == total
    states = [node_state_group(s) for s in sinfo("%T").split()]
    assert value(samples, "slurm_nodes_idle") + value(samples, "slurm_nodes_mix") + value(
        samples, "slurm_nodes_alloc"
    ) == sum(s in ("idle", "mix", "alloc") for s in states)


def test_a_submitted_gpu_job_shows_in_the_queue_and_its_partition(tmp_path: Path, slurm: None) -> None:
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--gres=gpu:1", "--mem=100M", "-o", "/dev/null", "--wrap", "sleep 120"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    job_id = submitted.split(";")[0]
    try:
        with exporter(tmp_path) as port:
            deadline = time.monotonic() + 60
            while True:  # wait (not a timed assertion) until the controller has started it
                state = subprocess.run(
                    ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
                ).stdout.strip()
                if state == "RUNNING" or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            _, samples = scrape(port)
            assert state in ("RUNNING", "PENDING"), state
            key = state.lower()
            assert value(samples, f"slurm_queue_{key}") >= 1
            assert value(samples, f"slurm_partition_jobs_{key}", partition="debug") >= 1
            if state == "RUNNING":  # the one (fake) GPU is held by this job
                assert value(samples, "slurm_gpus_alloc") >= 1
                assert value(samples, "slurm_gpus_idle") == value(samples, "slurm_gpus_total") - value(
                    samples, "slurm_gpus_alloc"
                ) - value(samples, "slurm_gpus_other")
                assert value(samples, "slurm_cpus_alloc") >= 1
    finally:
        subprocess.run(["scancel", job_id], check=False, capture_output=True)


def test_slurm_is_read_over_ssh_from_the_configured_login_node(
    tmp_path: Path, slurm: None, ssh_server: SSHServer
) -> None:
    env = make_env(tmp_path, slurm=True)
    data = yaml.safe_load(env.config.read_text())
    data["clusters"]["hpc"]["slurm"] |= {"login": ssh_server.login, "ssh_options": ssh_server.options}
    env.config.write_text(yaml.safe_dump(data))
    no_local_slurm = dict(os.environ, PATH="/usr/bin:/bin", SLURM_CONF=str(tmp_path / "none.conf"))
    with exporter(tmp_path, no_local_slurm, "--config", str(env.config)) as port:
        _, samples = scrape(port)
    assert value(samples, "slurm_exporter_scrape_error") == 0
    assert value(samples, "slurm_nodes_total") == sum(int(n) for n in sinfo("%D").split())

    data["clusters"]["hpc"]["slurm"]["login"] = "root@127.0.0.1:9"  # nothing listens there
    env.config.write_text(yaml.safe_dump(data))
    with exporter(tmp_path, None, "--config", str(env.config)) as port:
        status, samples = scrape(port)
    assert status == 200 and value(samples, "slurm_exporter_scrape_error") == 1
    assert "cannot reach the login node root@127.0.0.1" in (tmp_path / "exporter.log").read_text()


@pytest.mark.parametrize("broken", ["no sinfo on PATH", "bad SLURM_CONF"])
def test_an_unreachable_slurm_is_a_200_with_scrape_error(tmp_path: Path, broken: str) -> None:
    env = dict(os.environ)
    if broken == "no sinfo on PATH":
        env["PATH"] = str(tmp_path / "empty-bin")
    else:
        env["SLURM_CONF"] = str(tmp_path / "no-such-slurm.conf")
    with exporter(tmp_path, env) as port:
        status, samples = scrape(port)
    assert status == 200
    assert value(samples, "slurm_exporter_scrape_error") == 1
    assert not any(name.startswith("slurm_nodes_") for name, _ in samples)  # absent, not a false 0
    assert "cannot read SLURM" in (tmp_path / "exporter.log").read_text()


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:1", 1),
        ("gpu:0", 0),
        ("(null)", 0),
        ("gpu:a100:2(S:0-1)", 2),
        ("gpu:a100:2(IDX:0-1)", 2),
        ("gpu:a100:1(IDX:0,2),gpu:v100:1(IDX:1),shard:8", 2),
        ("mps:100,gpu:tesla:4(S:0)", 4),
    ],
)
def test_gpu_counts_from_gres_strings(gres: str, gpus: int) -> None:
    assert gpu_count(gres) == gpus


def test_node_states_group_like_slurm_exporter() -> None:
    assert [
        node_state_group(s) for s in ("mixed", "down*", "drained", "idle+drain", "allocated", "idle~")
    ] == [
        "mix",
        "down",
        "drain",
        "drain",
        "alloc",
        "idle",
    ]


def test_a_job_pending_in_several_partitions_counts_in_each() -> None:
    queue, partitions = parse_squeue("gpu,cpu|PENDING|Resources\ncpu|RUNNING|None\ncpu|PENDING|Dependency\n")
    assert (queue["pending"], queue["running"], queue["pending_dependency"]) == (2, 1, 1)
    assert partitions["gpu"]["pending"] == 1 and partitions["cpu"]["pending"] == 2
