"""Starting or joining Ray, TensorFlow's environment, and logging, the same way for every job.

Importing this module (or :mod:`brats`) changes nothing: entry points call
:func:`prepare_tensorflow`, :func:`setup_logging` and :func:`init_ray`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import json
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from brats.options import option

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class LocalRay:
    """How a job starts Ray when it is not joining a cluster."""

    num_cpus: int | None = option(
        None, help="CPUs for a local Ray (ignored when joining a cluster)"
    )


TENSORFLOW_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers on your machine"
    r"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)
"""The lines TensorFlow writes while it is imported, before its logging is set up (Abseil's
pre-``InitializeLog`` output ignores ``TF_CPP_MIN_LOG_LEVEL`` and every other setting): the
oneDNN notice, the CUDA probes of a CPU-only build or node, duplicate CUDA plugin
registrations. :func:`prepare_tensorflow` drops exactly these; any other line is kept."""

TENSORFLOW_ENV = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
"""The variables :func:`prepare_tensorflow` sets, and :func:`init_ray` passes to workers."""


def has_nvidia_device(dev: str = "/dev") -> bool:
    """Whether this node has an NVIDIA device node (``nvidiactl`` or ``nvidiaN``)."""
    return os.path.exists(os.path.join(dev, "nvidiactl")) or any(
        name.startswith("nvidia") and name[6:].isdigit() for name in _listdir(dev)
    )


def quiet_tensorflow(dev: str = "/dev") -> str:
    """Set TensorFlow's C++ log level, unless already set; call before TensorFlow is imported.

    2 (errors only) on a node with an NVIDIA device, 3 (fatal only) on one without, where the
    only errors TensorFlow logs are its failed CUDA probes (``failed call to cuInit``), one
    per process. Returns the level.
    """
    return os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_device(dev) else "3")


def use_onednn() -> str:
    """Turn on TensorFlow's oneDNN kernels on x86 CPUs, unless already set; call before
    TensorFlow is imported. Returns the setting.

    TensorFlow enables them by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on
    an AVX2-only CPU (AMD Zen 3, older Intel) it falls back to its own kernels, which train
    and predict this project's 3D U-Nets about 2 to 4 times slower. ``TF_ENABLE_ONEDNN_OPTS=0``
    in the environment keeps TensorFlow's kernels. oneDNN sums in another order, so figures can
    differ from those kernels' in the last float32 digits (not from run to run).
    """
    return os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


_given_tensorflow_env: dict[str, str] | None = None
"""The :data:`TENSORFLOW_ENV` variables this process was given before :func:`prepare_tensorflow`
first set its own defaults: what :func:`init_ray` passes on to workers (each worker picks the
rest for its own node)."""


def prepare_tensorflow(dev: str = "/dev") -> dict[str, str]:
    """Set up this process for TensorFlow; every entry point calls it before TensorFlow loads.

    Sets :func:`quiet_tensorflow`'s log level and :func:`use_onednn`'s kernels (a variable
    already in the environment wins). On a node without an NVIDIA device it also drops
    :data:`TENSORFLOW_NOISE` from what the first ``import tensorflow`` writes
    (:func:`quiet_tensorflow_import`); on a GPU node every line stays, since there a CUDA line
    may be the reason the GPU is not used, and a crash in the import keeps its last words.
    Importing :mod:`brats` does none of this. No GPU is hidden. Returns the
    :data:`TENSORFLOW_ENV` settings.
    """
    global _given_tensorflow_env
    if _given_tensorflow_env is None:
        _given_tensorflow_env = {n: os.environ[n] for n in TENSORFLOW_ENV if n in os.environ}
    quiet_tensorflow(dev)
    use_onednn()
    if not has_nvidia_device(dev):
        quiet_tensorflow_import()
    return {name: os.environ[name] for name in TENSORFLOW_ENV}


def prepare_worker() -> None:
    """A Ray worker's set-up (:data:`SETUP_HOOK`): :func:`prepare_tensorflow` on the worker's
    own node, so a GPU node keeps TensorFlow's error lines whatever the driver's node is."""
    prepare_tensorflow()


def quiet_tensorflow_import() -> None:
    """Drop :data:`TENSORFLOW_NOISE` from the standard error of this process while it first
    imports TensorFlow, keeping every other line (written after the import). Does nothing when
    TensorFlow is already imported or the filter is already in place. Ray workers run it at
    start (``init_ray``'s ``worker_process_setup_hook``)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and runs its module with standard error
    filtered; gone from ``sys.meta_path`` after that one import."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if isinstance(loader, importlib.abc.Loader):
            run = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                with _stderr_without(TENSORFLOW_NOISE):
                    run(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


@contextlib.contextmanager
def _stderr_without(noise: re.Pattern[str]) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the block (C++ writes there directly);
    its lines, less those matching ``noise``, are written to standard error after it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable standard error: nothing to filter
        saved = -1
    if saved < 0:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not noise.search(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def setup_logging(level: int = logging.INFO) -> None:
    """One format for every line on standard error (:data:`LOG_FORMAT`): ``brats`` loggers at
    ``level``, everything else at WARNING; Ray's, Ray Data's, TensorFlow's and Abseil's own
    loggers at WARNING too (Ray's keep Ray's own format). Sets no environment variable."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("brats").setLevel(level)
    _quiet_library_loggers()


def _quiet_library_loggers() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def progress_bars() -> bool:
    """Whether Ray Data draws its progress bars: only when stdout is a terminal."""
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # replaced or closed stdout
        return False


CONNECT_TIMEOUT_S = 30.0
"""How long :func:`init_ray` waits for a cluster's address to accept a connection."""

SETUP_HOOK = "brats.runtime.prepare_worker"
"""The ``worker_process_setup_hook`` :func:`init_ray` gives Ray workers."""


class ClusterUnreachable(ConnectionError):
    """The Ray cluster a job was told to join does not answer."""


def init_ray(
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    *,
    address: str | None = None,
) -> None:
    """Join the cluster a job was given, or start a local Ray; never wait without bound.

    The cluster is ``address``, else ``RAY_ADDRESS`` (``ray job submit`` sets it for the job's
    driver to its cluster's GCS address); ``num_cpus``/``object_store_memory`` are ignored
    when joining. With neither, or ``"local"``, a new local Ray of that size is started: never
    the last cluster ``ray start`` recorded in Ray's temp directory, which outlives a cluster
    whose processes were killed. Before joining, the cluster's address must accept a TCP
    connection within :data:`CONNECT_TIMEOUT_S` (Ray itself would retry a dead address for
    about 12 minutes).

    Workers get the :data:`TENSORFLOW_ENV` settings this job was given and :data:`SETUP_HOOK`
    (which picks the rest for each worker's node), except what a submitted job's own runtime
    environment already sets. Does nothing to Ray when it is already initialized.

    Raises:
        ClusterUnreachable: the address does not answer; the message names it and what to do.
    """
    import ray
    from ray.data import DataContext

    prepare_tensorflow()
    # Jobs log their own progress (brats.progress, and a line per epoch). Ray Data's progress
    # bars show in a terminal; in a job log, which is not one, their redraws would bury it
    # (they follow each dataset into the training workers too).
    bars = progress_bars()
    DataContext.get_current().enable_progress_bars = bars
    _quiet_library_loggers()  # Ray Data sets its loggers' levels when it is imported
    if not bars:  # else Ray Data warns, once per job, that we turned them off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    given = address or os.environ.get("RAY_ADDRESS") or "local"
    if given != "local":
        check_reachable(given)
        ray.init(address=given, runtime_env=_worker_runtime_env(), logging_level=logging.WARNING)
        return
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        runtime_env=_worker_runtime_env(),
        # Ray Train's placement-group cleaner asks the state API (served by the
        # dashboard) about its controller every few seconds and logs a warning each
        # time it cannot; Ray moves to the next free port when 8265 is taken.
        include_dashboard=True,
        logging_level=logging.WARNING,
    )


JOB_ADVICE = (
    "If that cluster is gone, run `ray stop` (it also forgets a cluster whose processes "
    "were killed), unset RAY_ADDRESS to start a local Ray, or pass a live address."
)
"""What :func:`check_reachable` tells a job whose cluster does not answer."""


def check_reachable(
    address: str, timeout: float = CONNECT_TIMEOUT_S, *, advice: str = JOB_ADVICE
) -> str:
    """Check that a Ray address accepts a TCP connection within ``timeout`` seconds.

    ``address`` is what ``ray.init`` or the job submission client takes: ``host:port``,
    ``auto`` (the cluster ``ray start`` last recorded), ``ray://host:port`` or
    ``http(s)://host[:port]`` (port 80 or 443 when none is given). Returns the ``host:port``
    it reached.

    Raises:
        ClusterUnreachable: nothing answers there (or ``auto`` finds no cluster); the message
            names the address and ends with ``advice`` (by default: run ``ray stop`` or
            unset ``RAY_ADDRESS``).
    """
    try:
        host, port = _host_port(address)
    except (ConnectionError, ValueError) as err:
        raise ClusterUnreachable(f"no Ray cluster at {address!r}: {err}. {advice}") from err
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        where = address if f"{host}:{port}" in address else f"{address} ({host}:{port})"
        raise ClusterUnreachable(
            f"the Ray cluster at {where} does not answer ({type(err).__name__}: {err}; "
            f"waited up to {timeout:.0f} s). {advice}"
        ) from err
    return f"{host}:{port}"


_DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}


def _host_port(address: str) -> tuple[str, int]:
    """``address``'s host and port, as Ray would resolve it (``auto``, localhost)."""
    if "://" in address:
        parsed = urlsplit(address)
        given = parsed.port or _DEFAULT_PORTS.get(parsed.scheme)
        if parsed.hostname is None or given is None:
            raise ValueError("expected scheme://host:port")
        return parsed.hostname, given
    from ray._private.services import canonicalize_bootstrap_address

    resolved = canonicalize_bootstrap_address(address)
    if resolved is None:
        raise ValueError("not a cluster address")
    host, _, port = resolved.rpartition(":")
    return host.strip("[]"), int(port)


def _worker_runtime_env() -> dict[str, Any]:
    """The TensorFlow settings this job was given (not the defaults :func:`prepare_tensorflow`
    picked for the driver's node) and the setup hook for this job's workers, less what the
    runtime environment of a submitted job already sets (Ray refuses to merge the same keys)."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    taken = (job.get("runtime_env") or {}) if isinstance(job, dict) else {}
    env_vars = taken.get("env_vars") or {}
    wanted = _given_tensorflow_env or {}
    runtime_env: dict[str, Any] = {
        "env_vars": {name: value for name, value in wanted.items() if name not in env_vars}
    }
    if "worker_process_setup_hook" not in taken and not os.environ.get(
        "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
    ):
        runtime_env["worker_process_setup_hook"] = SETUP_HOOK
    return runtime_env
