"""Nightly segmentation: submit ``jobs/segment.py`` to a running Ray cluster, once per date.

    python jobs/nightly.py --address http://127.0.0.1:8265 --cohort s3://b/incoming \
        --model s3://b/runs/unet-v1/model --out-root s3://b/nightly [--date 2026-11-25] \
        [--wait [--timeout 21600]] [--force] [-- --use-gpu --num-actors 8]

submits the Ray job ``brats-segment-2026-11-25`` with the entrypoint

    python jobs/segment.py --cohort s3://b/incoming --model s3://b/runs/unet-v1/model \
        --out s3://b/nightly/2026-11-25 --use-gpu --num-actors 8

and this repository as its working directory. The date defaults to today (the scheduler
host's local date). The submission id comes from the date, so a second run for the same date
is refused by Ray: that is reported as ``already submitted`` and exits 0 (with ``--wait`` it
waits for that job instead). ``--force`` submits again under a suffixed id
(``brats-segment-2026-11-25-r20261125T081500Z``) into the same output folder, where the
segment job skips the cases already done; it refuses while any of the date's jobs (the first
or a forced one) is still running.

No credentials travel with the job: the runtime environment carries no environment
variables, the cluster nodes reach S3 through their instance profile (``cluster.yaml``), and
arguments with credentials in them (``s3://KEY:SECRET@bucket``, an ``--s3-endpoint`` with a
``user:password@``) are refused before anything is logged or sent.
The client needs the cluster's auth token (Ray 2.60 token authentication): run it with
``RAY_AUTH_MODE=token`` and the head's token in ``~/.ray/auth_token`` or in the file named
by ``RAY_AUTH_TOKEN_PATH``.

cron (02:15 every night; the address is the ``ray dashboard cluster.yaml`` tunnel, or the
head's private address from a host inside the VPC):

    15 2 * * * cd /opt/brats && RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/opt/brats/.ray-token .venv/bin/python jobs/nightly.py --address http://127.0.0.1:8265 --cohort s3://b/incoming --model s3://b/runs/unet-v1/model --out-root s3://b/nightly --wait --timeout 21600 -- --use-gpu --num-actors 8 >> /var/log/brats-nightly.log 2>&1

Exit status: 0 submitted, already submitted, or (with ``--wait``) SUCCEEDED; 1 the job
FAILED or was STOPPED, or ``--force`` was refused; 2 bad arguments; 3 the cluster could not
be reached or refused the submission; 4 ``--wait`` timed out (the job keeps running).
"""  # noqa: E501 (the cron line above must stay one line)

from __future__ import annotations

import logging
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from brats.options import option
from brats.storage import StorageError, redact, resolve

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("brats.nightly")

SUBMISSION_PREFIX: Final = "brats-segment-"
SEGMENT_SCRIPT: Final = "jobs/segment.py"
# Never uploaded with the job: environments, history, local outputs, caches.
RUNTIME_ENV_EXCLUDES: Final = (
    ".venv",
    ".git",
    "demo-out",
    "bench-out",
    "runs",
    "__pycache__",
    "*.egg-info",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)
# Arguments of jobs/segment.py that the nightly command sets itself.
_OWN_SEGMENT_ARGS: Final = ("cohort", "model", "out")

_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SUFFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

EXIT_OK: Final = 0
EXIT_JOB_FAILED: Final = 1
EXIT_CLUSTER: Final = 3
EXIT_TIMEOUT: Final = 4


def validate_date(text: str) -> str:
    """Return ``text`` if it is a real calendar date written ``YYYY-MM-DD``.

    Only that exact form is accepted (``date.fromisoformat`` alone would also take
    ``20261125`` or week dates), so the date is safe inside a path and a submission id.
    """
    if not _DATE_RE.fullmatch(text):
        raise ValueError(f"date must be YYYY-MM-DD, got {text!r}")
    try:
        date.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"not a calendar date: {text!r} ({err})") from None
    return text


def today() -> str:
    """The local date, ``YYYY-MM-DD`` (the date a cron job on this host runs for)."""
    return date.today().isoformat()


def output_prefix(out_root: str, day: str) -> str:
    """The segment job's ``--out`` for ``day``: ``<out_root>/<day>`` (local path or URI).

    Raises:
        ValueError: a bad date, a root that is no folder or bucket, or one with a ``?`` or
            ``#`` (a URI's query or fragment would swallow the date: every night would
            resolve to one folder).
    """
    day = validate_date(day)
    root = out_root.rstrip("/")
    if not root or root.endswith(":"):
        raise ValueError(f"--out-root needs a folder or a bucket, got {_shown(out_root)!r}")
    if "?" in root or "#" in root:
        raise ValueError(
            "--out-root may not contain '?' or '#': storage drops what follows them, so "
            "every date would share one folder"
        )
    _check_uri("out-root", root)
    return f"{root}/{day}"


def _shown(text: str) -> str:
    """``text`` fit for a message: a URI without its ``user:password@`` and query."""
    try:
        return redact(text)
    except ValueError:  # a port that is not a number
        return "<a URI that does not parse>"


def _check_uri(name: str, value: str) -> None:
    """Refuse the ``--name`` argument if :func:`brats.storage.resolve` does (credentials in
    it, an unsupported scheme), as a ValueError naming the argument."""
    try:
        resolve(value)
    except (StorageError, ValueError) as err:
        raise ValueError(f"--{name} {_shown(value)}: {err}") from None


def submission_id(day: str, suffix: str | None = None) -> str:
    """The Ray submission id for ``day``: ``brats-segment-<day>[-<suffix>]``."""
    sid = SUBMISSION_PREFIX + validate_date(day)
    if suffix is None:
        return sid
    if not _SUFFIX_RE.fullmatch(suffix):
        raise ValueError(f"bad submission id suffix: {suffix!r}")
    return f"{sid}-{suffix}"


def force_suffix(now: datetime | None = None) -> str:
    """The suffix of a forced resubmission: ``r`` + the UTC time, to the second."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return now.strftime("r%Y%m%dT%H%M%SZ")


def segment_argv(cohort: str, model: str, out: str, extra: Sequence[str] = ()) -> list[str]:
    """The arguments of ``jobs/segment.py``, checked with the segment job's own parser.

    ``extra`` may add any other segment option (``--use-gpu``, ``--num-actors 8``...) but may
    not change the cohort, the model or the dated output folder. These arguments are logged
    and sent to the cluster as the job's entrypoint, so none may carry credentials: the
    cohort, the model and the output folder must be URIs :func:`brats.storage.resolve`
    takes (no ``user:password@``, a supported scheme), and an ``--s3-endpoint`` may have no
    ``user:password@`` either.

    Raises:
        ValueError: naming the argument refused (its value shown redacted).
    """
    from brats.segment.job import segment_parser

    for name, value in (("cohort", cohort), ("model", model), ("out", out)):
        if not value.strip():
            raise ValueError(f"--{name} is empty")
        _check_uri(name, value)
    argv = ["--cohort", cohort, "--model", model, "--out", out, *extra]
    try:
        parsed = segment_parser(SEGMENT_SCRIPT).parse_args(argv)
    except SystemExit as err:  # argparse has printed the reason
        shown = shlex.join(_shown(arg) for arg in argv)
        raise ValueError(f"jobs/segment.py rejects these arguments: {shown}") from err
    given = {"cohort": cohort, "model": model, "out": out}
    for name in _OWN_SEGMENT_ARGS:
        if getattr(parsed, name) != given[name]:
            raise ValueError(
                f"--{name} is set by the nightly command; remove it from the extra arguments"
            )
    endpoint = urlsplit(parsed.s3_endpoint or "")
    if endpoint.username is not None or endpoint.password is not None:
        raise ValueError(
            f"--s3-endpoint {_shown(parsed.s3_endpoint)}: credentials in the endpoint URL are "
            "not accepted; the cluster's nodes find theirs in the environment"
        )
    return argv


def build_entrypoint(cohort: str, model: str, out: str, extra: Sequence[str] = ()) -> str:
    """The job's shell command; every argument is quoted, so none becomes shell syntax."""
    return shlex.join(["python", SEGMENT_SCRIPT, *segment_argv(cohort, model, out, extra)])


def default_working_dir() -> Path:
    """The repository this module belongs to (it must contain ``jobs/segment.py``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / SEGMENT_SCRIPT).is_file():
        raise ValueError(f"{root} has no {SEGMENT_SCRIPT}: pass --working-dir")
    return root


def build_runtime_env(working_dir: Path) -> dict[str, Any]:
    """The job's runtime environment: the repository, without local baggage.

    Deliberately no ``env_vars``: credentials of the submitting host (``AWS_*``) must not
    reach the cluster, whose nodes use their instance profile.
    """
    if not (working_dir / SEGMENT_SCRIPT).is_file():
        raise ValueError(f"working dir {working_dir} has no {SEGMENT_SCRIPT}")
    return {"working_dir": str(working_dir), "excludes": list(RUNTIME_ENV_EXCLUDES)}


@dataclass(frozen=True)
class NightlyConfig:
    """One nightly submission: everything ``jobs/nightly.py`` takes.

    Raises:
        ValueError: a date that is not ``YYYY-MM-DD``, a non-positive timeout or poll, a
            working dir without ``jobs/segment.py``, an ``--out-root`` with ``?`` or ``#``,
            a cohort, model or output root with credentials in it (``user:password@``) or
            a scheme storage does not support, an ``--s3-endpoint`` with credentials, or
            segment arguments the segmentation job refuses (everything that is sent is
            built here, before any connection).
    """

    address: str = option(help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    cohort: str = option(help="NIfTI cohort: s3:// or a cluster path")
    model: str = option(help="model folder (model.keras + model.json, or an ensemble of folds)")
    out_root: str = option(help="outputs go to <out-root>/<date> (s3:// or path)")
    date: str | None = option(None, help="YYYY-MM-DD (default: today, local)")
    wait: bool = option(False, help="wait; exit 0 only on SUCCEEDED")
    timeout: float = option(6 * 3600.0, help="seconds --wait waits at most")
    poll: float = option(30.0, help="seconds between polls")
    force: bool = option(False, help="resubmit a date already submitted (suffixed id)")
    working_dir: Path | None = option(
        None, help="repository uploaded with the job (default: this checkout)"
    )
    segment_args: tuple[str, ...] = ()
    """Arguments for ``jobs/segment.py`` (those after ``--`` on the command line)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "date", validate_date(self.date or today()))
        if self.timeout <= 0 or self.poll <= 0:
            raise ValueError("--timeout and --poll must be positive")
        folder = default_working_dir() if self.working_dir is None else self.working_dir
        object.__setattr__(self, "working_dir", Path(folder).resolve())
        object.__setattr__(self, "segment_args", tuple(self.segment_args))
        _ = (self.entrypoint, self.runtime_env)

    @property
    def day(self) -> str:
        """The submission's date, ``YYYY-MM-DD``."""
        assert self.date is not None  # resolved in __post_init__
        return self.date

    @property
    def out(self) -> str:
        """The dated output folder."""
        return output_prefix(self.out_root, self.day)

    @property
    def submission_id(self) -> str:
        """The submission id of the first run for this date."""
        return submission_id(self.day)

    @property
    def entrypoint(self) -> str:
        """The shell command Ray runs for the job."""
        return build_entrypoint(self.cohort, self.model, self.out, self.segment_args)

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The job's runtime environment."""
        assert self.working_dir is not None  # resolved in __post_init__
        return build_runtime_env(self.working_dir)


def is_already_submitted(err: BaseException) -> bool:
    """Whether a ``submit_job`` error is Ray refusing a submission id already used."""
    return "already exists" in str(err)


def wait_for(
    client: JobSubmissionClient,
    sid: str,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Poll a job until it ends; its final status, or ``None`` when ``timeout`` ran out.

    A failed poll (a dropped tunnel, a restarting dashboard) is logged and retried.
    """
    deadline = clock() + timeout
    last = None
    while True:
        try:
            status = str(client.get_job_status(sid))
        except (ConnectionError, RuntimeError, OSError) as err:
            log.warning("polling %s failed: %s", sid, err)
        else:
            if status != last:
                log.info("%s: %s", sid, status)
                last = status
            if status in TERMINAL:
                return status
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        sleep(min(poll, remaining))


def _log_tail(client: JobSubmissionClient, sid: str, lines: int = 40) -> None:
    try:
        logs = client.get_job_logs(sid)
    except (ConnectionError, RuntimeError, OSError) as err:
        log.warning("could not read the logs of %s: %s", sid, err)
        return
    tail = "\n".join(logs.splitlines()[-lines:])
    print(f"--- last {lines} log lines of {sid} ---\n{tail}", file=sys.stderr)


def connect(address: str) -> JobSubmissionClient:
    """A client of the cluster's job API at ``address``.

    Raises:
        brats.runtime.ClusterUnreachable: nothing accepts a connection there within
            :data:`~brats.runtime.CONNECT_TIMEOUT_S` (the client itself has no timeout).
    """
    from ray.job_submission import JobSubmissionClient

    from brats.runtime import check_reachable

    check_reachable(
        address,
        advice="Check --address (the dashboard's, e.g. http://HEAD:8265) and that the "
        "cluster is up (`ray status` on its head).",
    )
    return JobSubmissionClient(address)


def unfinished(jobs: Sequence[Any], day: str) -> list[tuple[str, str]]:
    """``(submission id, status)`` of ``day``'s nightly jobs (the first and every forced
    one, :func:`submission_id`) that have not finished, among ``jobs`` (the cluster's
    ``JobDetails``): ``--force`` submits nothing beside any of them, since two jobs would
    write into one ``--out``."""
    first = submission_id(day)
    return sorted(
        (str(j.submission_id), str(j.status))
        for j in jobs
        if j.submission_id
        and (j.submission_id == first or j.submission_id.startswith(first + "-"))
        and str(j.status) not in TERMINAL
    )


def _submit(client: JobSubmissionClient, config: NightlyConfig, sid: str) -> None:
    client.submit_job(
        entrypoint=config.entrypoint,
        runtime_env=config.runtime_env,
        submission_id=sid,
        metadata={"brats": "nightly-segment", "date": config.day},
    )
    log.info("submitted %s: %s", sid, config.entrypoint)


def run(config: NightlyConfig, client: JobSubmissionClient) -> tuple[int, dict[str, Any]]:
    """Submit (or find) the job for ``config.date``, optionally wait; exit status + summary."""
    sid = config.submission_id
    summary: dict[str, Any] = {"submission_id": sid, "date": config.day, "out": config.out}
    try:
        _submit(client, config, sid)
        summary["status"] = "submitted"
    except RuntimeError as err:
        if not is_already_submitted(err):
            raise
        existing = str(client.get_job_status(sid))
        summary["previous_status"] = existing
        if not config.force:
            log.info("%s already submitted (%s)", sid, existing)
            summary["status"] = "already submitted"
        elif busy := unfinished(client.list_jobs(), config.day):
            log.error("%s is still %s; not submitting a second run beside it", *busy[0])
            summary["status"] = "refused"
            return EXIT_JOB_FAILED, summary
        else:
            sid = submission_id(config.day, force_suffix())
            _submit(client, config, sid)
            summary.update(submission_id=sid, status="submitted")
    if not config.wait:
        return EXIT_OK, summary
    final = wait_for(client, sid, config.timeout, config.poll)
    summary["job_status"] = final or "TIMEOUT"
    if final is None:
        log.error("%s still running after %.0f s", sid, config.timeout)
        return EXIT_TIMEOUT, summary
    if final != "SUCCEEDED":
        _log_tail(client, sid)
        return EXIT_JOB_FAILED, summary
    return EXIT_OK, summary
