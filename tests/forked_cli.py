"""Run ``python -m <module> <args>`` for a test in a real process that skips the interpreter start.

Each command runs in its own process, forked by the standard library's ``forkserver`` from a server
that has imported torch, Lightning, Hydra and mmvi once (about 5 s a process otherwise). The child
gets the command's argv, working folder, environment and its own stdout/stderr, runs the module as
``__main__`` exactly as ``python -m`` does (:func:`runpy.run_module`), runs the ``atexit`` handlers
and exits with the module's status; :func:`start_module` gives its pid for the tests that signal it.
What needs a fresh interpreter (the README's commands, DDP's own launches, the cluster) keeps
:mod:`subprocess`.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

PRELOAD = ["torch", "lightning", "hydra", "mmvi.train", "mmvi.eval", "mmvi.deep.pipeline", "mmvi.compare"]
_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(module: str, args: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.argv = [module, *args]
    sys.modules.pop(module, None)  # as under ``python -m``: the module runs once, as ``__main__``
    code = 0
    try:
        if module.endswith(".py"):
            runpy.run_path(module, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Started:
    """A command started by :func:`start_module`: the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, module: str, args: list[str], cwd: str | Path, env: dict[str, str] | None):
        self.args = [sys.executable, *([module] if module.endswith(".py") else ["-m", module]), *args]
        self._tmp = tempfile.TemporaryDirectory()
        self._out, self._err = Path(self._tmp.name) / "stdout", Path(self._tmp.name) / "stderr"
        self._out.touch()
        self._err.touch()
        env = dict(os.environ if env is None else env)
        self._proc = _server().Process(
            target=_child, args=(module, list(args), str(cwd), env, str(self._out), str(self._err))
        )
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._proc.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; its (stdout, stderr). On a timeout the process is killed."""
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join()
            raise subprocess.TimeoutExpired(self.args, timeout, self._out.read_text(), self._err.read_text())
        out, err = self._out.read_text(), self._err.read_text()
        self._tmp.cleanup()
        return out, err


def start_module(module: str, args: list[str], cwd: str | Path, env: dict[str, str] | None = None) -> Started:
    """``subprocess.Popen([python, -m, module, *args], stdout=PIPE, stderr=PIPE, text=True)``, forked."""
    return Started(module, args, cwd, env)


def run_module(
    module: str, args: list[str], cwd: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``subprocess.run([python, -m, module, *args], capture_output=True, text=True)``, forked; a
    ``module`` ending in ``.py`` is a script's path (``python <script> <args>``)."""
    started = start_module(module, args, cwd, env)
    out, err = started.communicate(timeout)
    return subprocess.CompletedProcess(started.args, started.returncode, out, err)
