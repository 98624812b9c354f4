"""Sync benchmark: ``ai-how sync`` beside a boto3 ``upload_file`` loop and the AWS CLI, against one S3 endpoint.

Starts its own moto S3 servers on free loopback ports (IAM auth on, as in the tests), makes N small
files (default 5,000 of 1 KB) and one big file (default 1 GiB), then times, each tool against the
same kind of endpoint (a fresh moto per run: moto slows down as objects pile up in it):

  small files, first sync   ai-how sync | boto3 upload_file loop | aws s3 sync
  small files, no-op        ai-how sync | aws s3 sync
  big file                  ai-how sync | aws s3 cp

ai-how and aws run as the commands users type (subprocesses, start-up included). Credentials travel
only in environment variables. Prints a table and, with --json, one JSON document.

    python bench/sync.py                      # the issue's sizes (moto is slow: several minutes)
    python bench/sync.py --repeat 3           # median of 3 runs per case, tools alternating
    python bench/sync.py -n 500 --big-mib 64  # a quick check
    python bench/sync.py --big-mib 0          # small files only
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ai_how.procs import free_port, wait_port

BIN = Path(sys.executable).parent


@contextmanager
def moto_server(workdir: Path, auth: bool) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port; yields the environment that reaches it."""
    import boto3

    port = free_port()
    env = os.environ | ({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {})
    with (workdir / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        key_id, secret = "bench", "bench-secret"
        if auth:
            iam = boto3.client(
                "iam",
                endpoint_url=endpoint,
                aws_access_key_id="setup",
                aws_secret_access_key="setup",
                region_name="us-east-1",
            )
            iam.create_user(UserName="bench")
            key = iam.create_access_key(UserName="bench")["AccessKey"]
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
            iam.put_user_policy(UserName="bench", PolicyName="s3", PolicyDocument=json.dumps(policy))
            key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]
        yield {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "S3_ENDPOINT_URL": endpoint,  # ai-how's store without a config
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    finally:
        proc.terminate()
        proc.wait(10)


def make_small(root: Path, count: int, size: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        sub = root / f"d{i // 500:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    return root


def make_big(root: Path, mib: int) -> Path:
    root.mkdir(parents=True)
    with (root / "weights.bin").open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1024 * 1024))
    return root


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=os.environ | env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


class Tools:
    """The commands compared, against one endpoint (credentials only in the environment)."""

    def __init__(self, env: dict[str, str], state_dir: Path) -> None:
        self.env, self.state_dir = env, state_dir
        self.endpoint = env["S3_ENDPOINT_URL"]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def ai_how(self, source: Path, dest: str) -> None:
        run(
            [str(BIN / "ai-how"), "--state-dir", str(self.state_dir), "sync", str(source), dest, "--json"],
            self.env,
        )

    def aws(self, *args: str) -> None:
        run([str(BIN / "aws"), "--endpoint-url", self.endpoint, "s3", *args, "--only-show-errors"], self.env)

    def boto3_loop(self, source: Path, bucket: str) -> None:
        client = self.client()
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, path.relative_to(source).as_posix())


# A case: tool -> the timed steps, each run against a fresh endpoint that holds one empty bucket "bench".
Steps = dict[str, Callable[[Tools], None]]


def small_steps(small: Path) -> dict[str, Steps]:
    return {
        "ai-how sync": {
            "small_first": lambda t: t.ai_how(small, "s3://bench/small"),
            "small_noop": lambda t: t.ai_how(small, "s3://bench/small"),
        },
        "aws s3 sync": {
            "small_first": lambda t: t.aws("sync", str(small), "s3://bench/small"),
            "small_noop": lambda t: t.aws("sync", str(small), "s3://bench/small"),
        },
    }


def big_steps(big: Path) -> dict[str, Steps]:
    return {
        "ai-how sync": {"big": lambda t: t.ai_how(big, "s3://bench/big")},
        "aws s3 cp": {"big": lambda t: t.aws("cp", str(big / "weights.bin"), "s3://bench/big/weights.bin")},
    }


def measure(
    workdir: Path,
    auth: bool,
    repeat: int,
    tools: dict[str, Steps],
    samples: dict[str, dict[str, list[float]]],
) -> None:
    """Run every tool's steps ``repeat`` times, alternating which tool goes first, each run on a fresh
    moto (moto slows down as objects pile up in it, which would favour whichever tool runs first)."""
    for round_ in range(repeat):
        names = list(tools) if round_ % 2 == 0 else list(reversed(tools))
        for name in names:
            run_dir = Path(tempfile.mkdtemp(prefix=f"run-{round_}-", dir=workdir))
            with moto_server(run_dir, auth) as env:
                endpoint = Tools(env, run_dir / "state")
                endpoint.client().create_bucket(Bucket="bench")
                for case, step in tools[name].items():
                    samples.setdefault(case, {}).setdefault(name, []).append(
                        timed(functools.partial(step, endpoint))
                    )


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    small = make_small(workdir / "small", args.files, args.size)
    big = make_big(workdir / "big", args.big_mib) if args.big_mib else None
    samples: dict[str, dict[str, list[float]]] = {}
    auth = not args.no_auth
    if big is not None:
        measure(workdir, auth, args.repeat, big_steps(big), samples)
    measure(workdir, auth, args.repeat, small_steps(small), samples)
    if not args.skip_boto3:
        loop: dict[str, Steps] = {
            "boto3 upload_file loop": {"small_first": lambda t: t.boto3_loop(small, "bench")}
        }
        measure(workdir, auth, 1, loop, samples)
    results: dict[str, Any] = {
        "files": args.files,
        "file_bytes": args.size,
        "big_mib": args.big_mib,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "moto_auth": auth,
        "samples_s": samples,
        "median_s": {case: {t: statistics.median(v) for t, v in by.items()} for case, by in samples.items()},
    }
    if big is not None:
        size_mb = args.big_mib * 1024 * 1024 / 1e6
        results["big_mb_per_s"] = {t: size_mb / v for t, v in results["median_s"]["big"].items()}
        results["big_ratio"] = (
            results["median_s"]["big"]["aws s3 cp"] / results["median_s"]["big"]["ai-how sync"]
        )
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['files']} files of {results['file_bytes']} B, big file {results['big_mib']} MiB, "
        f"{results['cpus']} CPUs, moto IAM auth {'on' if results['moto_auth'] else 'off'}, "
        f"median of {results['repeat']} alternating runs",
        f"{'case':<30}{'tool':<26}{'median s':>10}   samples",
    ]
    names = {
        "small_first": "small files, first sync",
        "small_noop": "small files, no-op re-sync",
        "big": "big file",
    }
    for case, by_tool in results["samples_s"].items():
        for tool, values in by_tool.items():
            median = results["median_s"][case][tool]
            rate = f"  ({results['big_mb_per_s'][tool]:.0f} MB/s)" if case == "big" else ""
            shown = ", ".join(f"{v:.2f}" for v in values)
            lines.append(f"{names[case]:<30}{tool:<26}{median:>10.2f}   [{shown}]{rate}")
    if "big_ratio" in results:
        lines.append(f"ai-how's big-file throughput is {results['big_ratio']:.0%} of aws s3 cp's")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--files", type=int, default=5000, help="small files (default 5000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per small file (default 1024)")
    parser.add_argument(
        "--big-mib", type=int, default=1024, help="big file size in MiB; 0 skips it (default 1024)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case, alternating the tools (default 1)"
    )
    parser.add_argument("--skip-boto3", action="store_true", help="leave out the boto3 upload_file loop")
    parser.add_argument("--no-auth", action="store_true", help="moto without IAM auth")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    if shutil.which("aws", path=str(BIN)) is None:
        parser.error(f"the AWS CLI is not installed in {BIN}: pip install awscli (it is in the dev extra)")
    workdir = Path(tempfile.mkdtemp(prefix="ai-how-bench-sync-"))
    try:
        results = bench(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
