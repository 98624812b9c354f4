"""What the SLURM exporter reports, read from SLURM's own CLI (``sinfo -O``, ``squeue -o``) in one snapshot.

Format strings, not ``--json``: their fields stay put across SLURM releases, while the JSON
schema changed with every OpenAPI version (v0.0.38 in 22.05, v0.0.40+ later). Commands go through
ai-how's SLURM transport (this machine, or SSH to the login node of ``clusters.hpc.slurm.login``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ai_how.errors import AiHowError
from ai_how.slurm.transport import Transport

# sinfo -O: type:0 is "no width limit" (the default, 20, truncates), the "|" suffix separates fields.
NODE_FIELDS = ("NodeHost", "StateLong", "CPUsState", "Gres", "GresUsed", "Partition")
SINFO_ARGV = ["sinfo", "-h", "-N", "-O", ",".join(f"{name}:0|" for name in NODE_FIELDS)]
# squeue: every job SLURM still knows (finished ones until MinJobAge), array tasks one by one.
SQUEUE_ARGV = ["squeue", "-h", "-a", "-r", "-t", "all", "-o", "%P|%T|%r"]

# Node states as SckyzO/slurm_exporter groups them (the metric is slurm_nodes_<group>).
NODE_STATE_GROUPS = (
    "alloc",
    "comp",
    "down",
    "drain",
    "err",
    "fail",
    "idle",
    "maint",
    "mix",
    "resv",
    "planned",
)
_NODE_STATE = {
    "allocated": "alloc",
    "completing": "comp",
    "down": "down",
    "drained": "drain",
    "draining": "drain",
    "drain": "drain",
    "error": "err",
    "fail": "fail",
    "failing": "fail",
    "future": "other",
    "idle": "idle",
    "maint": "maint",
    "mixed": "mix",
    "reserved": "resv",
    "planned": "planned",
}
# Nodes in these groups cannot run jobs: their GPUs count as "other", as SLURM counts their CPUs.
UNUSABLE = {"down", "drain", "err", "fail"}
# Job states reported as slurm_queue_<state> (always present, 0 when no job is in it).
QUEUE_STATES = (
    "pending",
    "pending_dependency",
    "running",
    "suspended",
    "completing",
    "completed",
    "configuring",
    "cancelled",
    "failed",
    "timeout",
    "preempted",
    "node_fail",
    "out_of_memory",
)


@dataclass
class Resources:
    """CPUs and GPUs of a set of nodes (the cluster, or one partition)."""

    cpus_alloc: int = 0
    cpus_idle: int = 0
    cpus_other: int = 0
    cpus_total: int = 0
    gpus_alloc: int = 0
    gpus_other: int = 0
    gpus_total: int = 0

    @property
    def gpus_idle(self) -> int:
        return max(0, self.gpus_total - self.gpus_alloc - self.gpus_other)

    def add(self, node: Node) -> None:
        self.cpus_alloc += node.cpus_alloc
        self.cpus_idle += node.cpus_idle
        self.cpus_other += node.cpus_other
        self.cpus_total += node.cpus_total
        self.gpus_total += node.gpus_total
        if node.state_group in UNUSABLE:
            self.gpus_other += max(0, node.gpus_total - node.gpus_alloc)
        self.gpus_alloc += node.gpus_alloc


@dataclass
class Node:
    name: str
    state: str  # as sinfo prints it, e.g. "idle", "mixed", "drained", "down*"
    cpus_alloc: int
    cpus_idle: int
    cpus_other: int
    cpus_total: int
    gpus_total: int
    gpus_alloc: int
    partitions: list[str] = field(default_factory=list)

    @property
    def state_group(self) -> str:
        return node_state_group(self.state)


@dataclass
class Snapshot:
    nodes: dict[str, Node]
    node_states: Counter[str]
    cluster: Resources
    partitions: dict[str, Resources]
    queue: Counter[str]
    partition_jobs: dict[str, Counter[str]]


def node_state_group(state: str) -> str:
    """``mixed`` -> mix, ``down*`` (not responding) -> down, ``idle+drain`` / ``drained`` -> drain."""
    words = [re.sub(r"[*~#%$@^!+-]+$", "", part).lower() for part in state.split("+")]
    if any(word.startswith("drain") for word in words):
        return "drain"
    return _NODE_STATE.get(words[0], "other") if words else "other"


def _split_gres(text: str) -> list[str]:
    """Split ``gpu:a100:2(IDX:0,2),shard:8`` at the commas outside parentheses."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string: ``gpu:2``, ``gpu:a100:2(S:0-1)``, ``gpu:a100:1,gpu:v100:1``, ``(null)`` -> 2, 2, 2, 0."""
    total = 0
    for item in _split_gres(gres):
        parts = item.split("(", 1)[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        match = re.fullmatch(r"(\d+)", parts[-1])
        total += int(match.group(1)) if match else 0
    return total


def parse_cpus_state(text: str) -> tuple[int, int, int, int]:
    """``allocated/idle/other/total`` -> four ints."""
    parts = text.split("/")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a CPUsState: {text!r}")
    alloc, idle, other, total = (int(p) for p in parts)
    return alloc, idle, other, total


def parse_sinfo_nodes(text: str) -> dict[str, Node]:
    """``sinfo -h -N -O NodeHost:0|,...`` (one line per node and partition) -> nodes by name."""
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < len(NODE_FIELDS):
            raise ValueError(f"unexpected sinfo line: {line[:120]!r}")
        name, state, cpus, gres, gres_used, partition = fields[: len(NODE_FIELDS)]
        partition = partition.rstrip("*")  # "debug*": the default partition
        if name in nodes:
            nodes[name].partitions.append(partition)
            continue
        alloc, idle, other, total = parse_cpus_state(cpus)
        nodes[name] = Node(
            name,
            state,
            alloc,
            idle,
            other,
            total,
            gpus_total=gpu_count(gres),
            gpus_alloc=gpu_count(gres_used),
            partitions=[partition],
        )
    return nodes


def parse_squeue(text: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """``squeue -h -o %P|%T|%r`` -> (jobs by state, jobs by state per partition)."""
    queue: Counter[str] = Counter()
    per_partition: dict[str, Counter[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        partitions, state, reason = [*line.split("|"), "", ""][:3]
        state = state.strip().lower()
        queue[state] += 1
        if state == "pending" and reason.strip().startswith("Dependency"):
            queue["pending_dependency"] += 1
        for partition in partitions.split(","):  # a pending job may name several partitions
            if partition.strip():
                per_partition.setdefault(partition.strip(), Counter())[state] += 1
    return queue, per_partition


def _run(transport: Transport, argv: list[str], timeout_s: float) -> str:
    result = transport.run(argv, timeout_s)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise AiHowError(
            f"{argv[0]} failed on {transport.where}: {message[-1] if message else result.returncode}"
        )
    return result.stdout


def read_snapshot(transport: Transport, timeout_s: float = 10) -> Snapshot:
    """Nodes, CPUs, GPUs and the queue, cluster-wide and per partition (AiHowError when SLURM does not answer)."""
    nodes = parse_sinfo_nodes(_run(transport, SINFO_ARGV, timeout_s))
    queue, partition_jobs = parse_squeue(_run(transport, SQUEUE_ARGV, timeout_s))
    cluster, partitions = Resources(), dict[str, Resources]()
    for node in nodes.values():
        cluster.add(node)
        for partition in node.partitions:
            partitions.setdefault(partition, Resources()).add(node)
    for partition in partition_jobs:
        partitions.setdefault(partition, Resources())
    states = Counter(node.state_group for node in nodes.values())
    return Snapshot(nodes, states, cluster, partitions, queue, partition_jobs)
