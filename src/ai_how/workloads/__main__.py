import sys

from ai_how.workloads.common import run_workload

if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python -m ai_how.workloads NAME --output DIR [options]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_workload(sys.argv[1], sys.argv[2:]))
