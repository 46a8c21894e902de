"""tests/trainers/cli_runner.py, which the trainers' bad-flag tests use: each
command line gives what `python SCRIPT ARGS...` gives in a fresh process,
and nothing one case does reaches the next."""

import textwrap

from helpers import run_python
from helpers import run_script_cases

# An absl script with the exits a trainer has; it also changes state that a
# case run in the same interpreter as the one before would see.
SCRIPT = textwrap.dedent("""
    import atexit
    import os
    import sys
    import threading
    import time

    from absl import app
    from absl import flags

    flags.DEFINE_integer("n", 0, "What to do.")
    flags.DEFINE_string("tag", "default", "Printed back.")
    CALLS = []
    atexit.register(lambda: print("atexit ran"))


    def main(argv):
        CALLS.append(argv)
        os.environ["CLI_RUNNER_SEEN"] = os.environ.get("CLI_RUNNER_SEEN", "") + "x"
        print(f"n={flags.FLAGS.n} tag={flags.FLAGS.tag} calls={len(CALLS)}",
              f"seen={os.environ['CLI_RUNNER_SEEN']} path0={os.path.basename(sys.path[0])}")
        os.write(2, b"written to fd 2\\n")  # as TensorFlow's C++ logging writes
        if flags.FLAGS.n < 0:
            sys.stderr.write("error: --n must be >= 0\\n")
            return 2
        if flags.FLAGS.n == 13:
            raise RuntimeError("unlucky")
        if flags.FLAGS.n == 7:
            sys.exit("stopped at 7")
        if flags.FLAGS.n == 5:  # the interpreter waits for it before atexit
            threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
        return 0


    if __name__ == "__main__":
        app.run(main)
""")
CASES = [["--n=3", "--tag=first"], [], ["--n=-1"], ["--n=13"], ["--n=x"], ["--n=7"], ["--n=5"],
         ["--tag=last"]]


def test_each_case_is_what_a_fresh_process_gives(tmp_path):
    script = tmp_path / "tool" / "script.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    warm = run_script_cases(str(script), CASES, tmp_path / "output", timeout=120)
    fresh = [run_python([str(script), *args], check=False, timeout=120) for args in CASES]
    for args, got, expected in zip(CASES, warm, fresh):
        assert got.args == [str(script), *args]
        assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout), args
        # Tracebacks name the frames that ran the script; the rest is the same.
        if "Traceback" in expected.stderr:
            assert got.stderr.endswith(expected.stderr.splitlines()[-1] + "\n")
        else:
            assert got.stderr == expected.stderr, args

    codes = [result.returncode for result in warm]
    assert codes == [0, 0, 2, 1, 1, 1, 0, 0]
    # No case sees the flags, module state or environment of the one before.
    assert warm[0].stdout == "n=3 tag=first calls=1 seen=x path0=tool\natexit ran\n"
    assert warm[1].stdout == "n=0 tag=default calls=1 seen=x path0=tool\natexit ran\n"
    assert warm[7].stdout == "n=0 tag=last calls=1 seen=x path0=tool\natexit ran\n"
    assert warm[6].stdout.endswith("\nthread done\natexit ran\n")
    for index in (0, 1, 2, 3, 5, 6, 7):  # every case that reached main
        assert warm[index].stderr.startswith("written to fd 2\n")
    assert warm[2].stderr.endswith("error: --n must be >= 0\n")
    assert "Traceback" in warm[3].stderr and warm[3].stderr.endswith("RuntimeError: unlucky\n")
    assert "FATAL Flags parsing error" in warm[4].stderr and warm[4].stdout == "atexit ran\n"
    assert warm[5].stderr.endswith("\nstopped at 7\n")


def test_a_script_whose_imports_fail_fails_in_every_case(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import json\nimport no_such_module_anywhere\n")
    warm = run_script_cases(str(script), [[], ["--x"]], tmp_path / "output", timeout=120)
    fresh = run_python([str(script)], check=False, timeout=120)
    assert fresh.returncode == 1
    for result in warm:
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr.endswith(fresh.stderr.splitlines()[-1] + "\n")
        assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in result.stderr
