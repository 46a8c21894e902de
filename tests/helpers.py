"""Small helpers shared by pipeline tests: run a command in a fresh process,
or many command lines of one script in one warm process."""

import json
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "imdb_sample.json")


def run_python(args, timeout=600, env=None, check=True):
    """Runs `python ARGS...` from the repo root; returns the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def run_python_together(commands, timeout=600):
    """Runs `python ARGS...` for every argument list of `commands` at the same
    time, from the repo root; returns their CompletedProcesses, in order.

    Each must exit 0 (AssertionError otherwise, with its output). A trainer
    spends most of a tiny run tracing TensorFlow functions in one thread, so
    two at once finish sooner on a two-core machine than one after the other.
    """
    with tempfile.TemporaryDirectory() as scratch:
        processes = []
        for index, args in enumerate(commands):
            with open(os.path.join(scratch, f"{index}.out"), "w") as out, open(
                    os.path.join(scratch, f"{index}.err"), "w") as err:
                processes.append(subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT,
                                                  stdout=out, stderr=err, text=True))
        deadline = time.monotonic() + timeout
        try:
            codes = [process.wait(timeout=max(1.0, deadline - time.monotonic()))
                     for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        results = []
        for index, (args, code) in enumerate(zip(commands, codes)):
            with open(os.path.join(scratch, f"{index}.out")) as out, open(
                    os.path.join(scratch, f"{index}.err")) as err:
                results.append(subprocess.CompletedProcess(
                    [sys.executable, *args], code, out.read(), err.read()))
    for result in results:
        if result.returncode != 0:
            raise AssertionError(f"{result.args[1:]}: exit {result.returncode}\nstdout:\n"
                                 f"{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    return results


def run_script_cases(script, cases, directory, timeout=600):
    """Runs `python SCRIPT ARGS...` for each argument list of `cases`.

    One process (tests/trainers/cli_runner.py) imports what the script
    imports, once, then forks a child per case that runs the script as
    `__main__`: the same exit code, stdout and stderr as a fresh process,
    without a TensorFlow start-up per case. `directory` (empty or new) keeps
    each case's output. Returns a CompletedProcess per case, in order.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "cases.json"), "w", encoding="utf-8") as file:
        json.dump([list(args) for args in cases], file)
    run_python([os.path.join("tests", "trainers", "cli_runner.py"), script, str(directory)],
               timeout=timeout)
    with open(os.path.join(directory, "returncodes.json"), encoding="utf-8") as file:
        codes = json.load(file)
    results = []
    for index, (args, code) in enumerate(zip(cases, codes)):
        output = {}
        for stream in ("stdout", "stderr"):
            with open(os.path.join(directory, f"{index}.{stream}"), encoding="utf-8",
                      errors="replace") as file:
                output[stream] = file.read()
        results.append(subprocess.CompletedProcess([script, *args], code, **output))
    return results


_LOAD_SCRIPT = """
import json, sys
import kerapos  # alone: the package registers its serialisable classes
import keras
import numpy as np
rows = []
for path in json.loads(sys.argv[1]):
    model = keras.saving.load_model(path, safe_mode=True)
    weights = [np.asarray(w, np.float64) for w in model.get_weights()]
    rows.append([model.count_params(), float(sum(w.sum() for w in weights))])
print(json.dumps(rows))
"""


def keras_files_in_fresh_process(paths):
    """Loads each `.keras` file in one fresh process that imports only
    `kerapos` and `keras` (`safe_mode=True`); returns per file `[parameters,
    sum of all weights]`, for comparing with the same file loaded here."""
    result = run_python(["-c", _LOAD_SCRIPT, json.dumps([str(p) for p in paths])])
    return json.loads(result.stdout.strip().splitlines()[-1])


def keras_file_summary(path):
    """`[parameters, sum of all weights]` of a `.keras` file loaded here."""
    import keras
    import numpy as np

    model = keras.saving.load_model(str(path), safe_mode=True)
    return [model.count_params(),
            float(sum(np.asarray(w, np.float64).sum() for w in model.get_weights()))]


_WARMUP_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf
try:
    import tensorflow_text  # noqa: F401  (BERT exports use its ops)
except ImportError:
    pass
from tensorflow_serving.apis import prediction_log_pb2
answers = []
for version_dir in json.loads(sys.argv[1]):
    loaded = tf.saved_model.load(version_dir)
    path = version_dir + "/assets.extra/tf_serving_warmup_requests"
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = signature(**inputs)
        answers.append({"signature": request.model_spec.signature_name,
                        "batch": [int(v.shape[0]) for v in inputs.values()],
                        "outputs": {k: int(v.shape[0]) for k, v in outputs.items()}})
assert not [m for m in sys.modules if m.startswith(("kerapos", "keras_hub"))]
print(json.dumps(answers))
"""


def replay_warmup_in_fresh_process(*version_dirs):
    """Replays each export's `assets.extra/tf_serving_warmup_requests` as TF
    Serving does at load, in one fresh process with TensorFlow (and tf-text)
    only, read with the `tensorflow-serving-api` protos; returns per request
    `{"signature", "batch": [input batch sizes], "outputs": {name: batch}}`."""
    result = run_python(["-c", _WARMUP_SCRIPT, json.dumps([str(d) for d in version_dirs])])
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_warmup_replays(*version_dirs, output_names):
    """Every export holds requests at batch 1 and 8 for `serving_default`,
    and each returns every output (`output_names`) at its batch size."""
    answers = replay_warmup_in_fresh_process(*version_dirs)
    assert [a["batch"] for a in answers] == [[1], [8]] * len(version_dirs)
    for answer in answers:
        assert answer["signature"] == "serving_default"
        assert answer["outputs"] == {name: answer["batch"][0] for name in output_names}
