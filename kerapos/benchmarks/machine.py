"""This machine's speed, in a few seconds: the float32 matmul GFLOP/s that
every kerapos speed record carries beside its times.

    python -m kerapos.benchmarks.machine
    # {"device": "CPU (2 cores)", "matmul_gflops": 141.3}

CPUs of one kind differ by up to 2x between machines, so compare absolute
times only together with this figure (or as ratios measured in one run).
"""

import json
import sys

from kerapos.training import runtime


def main(argv):
    if len(argv) > 1:
        print("usage: python -m kerapos.benchmarks.machine (no arguments)", file=sys.stderr)
        return 2
    print(json.dumps(runtime.machine()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
