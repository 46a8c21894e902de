"""The GPU benchmark scripts (benchmarks/gpu/) are scripts, not a package:
their tests import them the way Python does when it runs them, with their
folder on `sys.path` (so `import backend_run` finds their sibling)."""

import os
import sys

GPU_SCRIPTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks", "gpu"
)
if GPU_SCRIPTS not in sys.path:
    sys.path.insert(0, GPU_SCRIPTS)
