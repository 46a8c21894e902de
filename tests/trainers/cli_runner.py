"""Runs command lines of one script as `python SCRIPT ARGS...` would, in one process.

    python tests/trainers/cli_runner.py SCRIPT DIRECTORY

DIRECTORY/cases.json is a list of argument lists. This process imports what
SCRIPT imports at its top level (TensorFlow, Keras, kerapos: the seconds a
fresh process spends) but never runs SCRIPT itself. For each argument list
it forks a child that runs SCRIPT as `__main__` with `sys.argv = [SCRIPT,
*args]`, the script's folder first on `sys.path`, and file descriptors 1 and
2 on DIRECTORY/<i>.stdout and DIRECTORY/<i>.stderr (so what TensorFlow's C++
code writes is caught too). The child ends as the interpreter ends a script:
an uncaught exception prints its traceback and exits 1, `SystemExit` gives
its status (or prints its message and exits 1), threads are joined and
atexit handlers run. Every child starts from the same state of this
process, so nothing a case does (absl flags parsed, log handlers added,
modules changed) reaches the next one. DIRECTORY/returncodes.json gets the
exit statuses, in order.

No TensorFlow op runs before the fork (importing TensorFlow starts no thread
pools), so each child initialises TensorFlow's runtime as a fresh process does.
"""

import ast
import atexit
import importlib
import json
import os
import runpy
import sys
import threading


def top_level_imports(script):
    """The modules `script` imports outside functions and classes, in order
    (for `from a import b`, `a` and, should it be a module, `a.b`)."""
    with open(script, encoding="utf-8") as file:
        tree = ast.parse(file.read(), script)
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def preload(names):
    """Imports what it can of `names`. What fails is left to the children,
    which then fail as a fresh process does, each with its own traceback."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # not a module, or broken: see above
            pass


def run_case(script, args, output_prefix):
    """Forks; the child runs `script` as `__main__` and ends as the
    interpreter ends a script. Returns the child's exit code (-N: signal N)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
        target = os.open(output_prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = exit_code(stop.code)
    except BaseException:  # what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    # The interpreter's shutdown: join threads, run atexit, flush. Tearing the
    # modules down writes nothing and would take a second with TensorFlow.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_code(code):
    """The exit status of `SystemExit(code)` (a non-integer is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main():
    script, directory = sys.argv[1:]
    with open(os.path.join(directory, "cases.json"), encoding="utf-8") as file:
        cases = json.load(file)
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as for `python script`
    preload(top_level_imports(script))
    codes = [run_case(script, args, os.path.join(directory, str(index)))
             for index, args in enumerate(cases)]
    with open(os.path.join(directory, "returncodes.json"), "w", encoding="utf-8") as file:
        json.dump(codes, file)


if __name__ == "__main__":
    main()
