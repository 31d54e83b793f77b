"""A local OpenAI-compatible server for a checkpoint: ``transformers serve`` on loopback.

The real-scale path talks to its teacher, its LLM judge and its LLM tagger over HTTP
(``/v1/chat/completions``). To rehearse that path without a GPU server, a small checkpoint is
hosted on this machine with ``transformers serve`` (``pip install -e ".[serving]"``), started
and stopped here with a health check, and the same clients talk to it::

    with serving.LocalServer("outputs/tiny/06_rl/model", work_dir="outputs/tiny/server") as srv:
        teacher = EndpointTeacher(srv.base_url, srv.model, ...)

Sampling. ``transformers serve`` (5.23) applies a request's ``temperature`` only when the
checkpoint's generation config samples (``do_sample: true``); otherwise every request is
answered greedily, whatever temperature it asks for (the server logs "generation flags are not
valid and may be ignored: ['temperature']"), and a teacher's n rollouts of a problem would all
be the same text. So the server hosts :func:`sampling_copy` of the checkpoint: its files
linked, its ``generation_config.json`` set to sample. A request with temperature 0 is still
greedy. A request's ``seed`` seeds the server's one global generator, so concurrent requests
are not reproducible one by one (vLLM's per-request seeds are).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


class ServerError(RuntimeError):
    """The local server could not be started, or stopped answering its health check."""


def serve_available() -> bool:
    """Whether ``transformers serve`` can run here (its ``serving`` extra: fastapi, uvicorn, openai)."""
    from transformers.utils import is_serve_available

    return bool(is_serve_available())


def sampling_copy(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """``out_dir``: the checkpoint's files as links, with a generation config that samples.

    Weights are linked, not copied (a 3.8B checkpoint costs nothing); the original folder is
    never modified. Raises FileNotFoundError when ``checkpoint`` has no ``config.json``.
    """
    src, out = Path(checkpoint).resolve(), Path(out_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: not a checkpoint folder (no config.json); pass a save_pretrained folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "generation_config.json":
            (out / f.name).symlink_to(f)
    gen_path = src / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    gen["do_sample"] = True
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServer:
    """``transformers serve`` hosting one checkpoint on loopback, as a context manager.

    ``base_url`` (``http://127.0.0.1:PORT/v1``) and ``model`` (the name to send) are what an
    :class:`lib.teachers.endpoint.EndpointTeacher` or the LLM judge needs. The server's output
    goes to ``work_dir/server.log``; a server that does not answer ``/health`` within
    ``startup_timeout_s``, or exits, raises :class:`ServerError` with the log's tail.
    """

    def __init__(self, checkpoint: str | os.PathLike, *, work_dir: str | os.PathLike, port: int | None = None,
                 host: str = "127.0.0.1", startup_timeout_s: float = 180.0, name: str = "served_model"):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"served model name {name!r}: use letters, digits, '_', '.', '-' (it is a folder name)")
        self.checkpoint, self.work_dir = Path(checkpoint), Path(work_dir).resolve()
        self.name = name
        self.host, self.port = host, port or free_port(host)
        self.startup_timeout_s = float(startup_timeout_s)
        self.served: Path | None = None
        self._proc: subprocess.Popen | None = None
        self.log_path = self.work_dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name requests must send: the server is pinned to it (``name``)."""
        return self.name

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://{self.host}:{self.port}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> "LocalServer":
        if not serve_available():
            raise ServerError('transformers serve needs its serving extra: pip install -e ".[serving]" '
                              "(fastapi, uvicorn, openai)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.served = sampling_copy(self.checkpoint, self.work_dir / self.name)
        # served by its folder name from inside work_dir: the server is pinned to the name it was
        # given and refuses requests for any other (400), so the name is the one params can state
        cmd = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
               "serve", self.name, "--host", self.host, "--port", str(self.port)]
        # a local folder: never reach for the hub. An (empty) hub cache of its own: without one,
        # GET /v1/models fails with a 500 whose aborted connection the client's next request inherits
        (self.work_dir / "hf_cache").mkdir(exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(self.work_dir / "hf_cache")}
        log = self.log_path.open("w")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                      cwd=self.work_dir)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"transformers serve exited with code {self._proc.returncode} before answering; "
                                  f"{self.log_path}:\n{self._log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"transformers serve did not answer {self.base_url.rsplit('/v1', 1)[0]}/health within "
                          f"{self.startup_timeout_s:.0f} s; {self.log_path}:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
