"""Test-wide set-up: quiet TensorFlow and two logical CPU devices.

`tf.distribute` is tested without GPUs by splitting the one physical CPU into
two logical devices; that must happen before TensorFlow initialises its
runtime, so it is done here, before any test module runs an op.
"""

import os
import sys

# kerapos quiets TensorFlow's start-up and sets the Keras backend before TF loads.
# isort: off
import kerapos  # noqa: F401
import tensorflow as tf

# isort: on

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
