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
