"""The one error tree of ftbroker.

Every error a user can meet derives from ``FtBrokerError`` and carries the exit code the CLI
uses for it; only ``ftbroker.cli`` turns errors into text. Lower-layer exceptions (SDK, OS, JSON)
are translated where they cross into ftbroker, with ``raise ... from``.

    FtBrokerError                     exit 1: the operation failed
    ├── InputError                    exit 2: bad input or usage
    │   ├── DatasetError              .issues: [DataIssue(path, line, message)], printed FILE:LINE: message
    │   ├── SpecError                 .problems: every invalid field of a job spec, reported at once
    │   ├── CatalogError              a catalog or override file that does not validate
    │   └── UnknownNameError          .name, .kind, .choices; says "did you mean"
    ├── GuardError                    exit 3: refused by a guard before anything was spent
    │   ├── BudgetExceededError       the estimate is over --max-cost
    │   ├── DoesNotFitError           the job will not fit the hardware
    │   ├── RouteUnavailableError     the provider no longer (or not yet) offers the route
    │   ├── NotConfirmedError         the user declined the confirmation prompt
    │   └── JobBusyError              another process holds the job's lease (submitting, resuming it, ...)
    ├── ExtraNotInstalledError        an optional dependency is missing; names the pip extra (exit 2 when an
    │                                 option asked for it: plan --chart)
    ├── BackendError                  .backend, .request_id; a provider call failed
    │   ├── BackendAuthError
    │   ├── BackendRateLimitError     .retry_after (seconds or None)
    │   ├── BackendUnavailableError   connection errors, timeouts, 5xx after retries
    │   └── ProviderAPIError          other 4xx; .status_code
    ├── JobError
    │   ├── JobNotFoundError          exit 2: no such job id in the ledger
    │   └── JobFailedError            .job_id; the job ended failed
    └── LedgerError                   the job ledger cannot be read or written
        └── LedgerDamagedError        exit 2: a damaged file or row, or a lost index; says how to recover
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class FtBrokerError(Exception):
    """Root of every ftbroker error."""

    exit_code = 1

    def add_hint(self, hint: str) -> None:
        """Add what the user can do next to the message, where a caller knows more than the raiser."""
        self.args = (f"{self}; {hint}", *self.args[1:])


class InputError(FtBrokerError):
    """The user's input (arguments, files, names) is wrong; fixing it is the user's move."""

    exit_code = 2


@dataclass(frozen=True, order=True)
class DataIssue:
    """One problem or remark about one line of a dataset file (line 0: the file as a whole)."""

    path: str
    line: int
    message: str
    count: int = 1  # how many problems it stands for (a summary of errors not listed one by one: more than 1)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


class DatasetError(InputError):
    """A dataset is unreadable or invalid. ``issues`` holds every error found, in file order."""

    SHOWN = 20

    def __init__(self, issues: Sequence[DataIssue]):
        self.issues = list(issues)
        shown = [str(i) for i in self.issues[: self.SHOWN]]
        rest = sum(i.count for i in self.issues[self.SHOWN:])
        if rest > 0:
            shown.append(f"... and {rest} more error{'s' if rest != 1 else ''}")
        super().__init__("\n".join(shown))


class SpecError(InputError):
    """A job spec (file or flags) is invalid; ``problems`` lists each bad field with what is wrong."""

    def __init__(self, problems: Sequence[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"invalid job spec{f' in {source}' if source else ''}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class CatalogError(InputError):
    """A catalog file (shipped or user override) does not validate."""


class CatalogFetchError(FtBrokerError):
    """Refreshing the catalog from its upstream source failed (network, HTTP status, an unreadable answer)."""


class UnknownNameError(InputError):
    """A model, GPU, backend or job name that is not known; suggests the closest known names, or lists a short
    list of valid ones when none is close and no ``hint`` says where to look."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str | None = None):
        self.kind, self.name = kind, name
        self.choices = sorted(set(choices))
        close = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        if not close:  # case-insensitive fallback: "llama-3.1-8b" should find "Llama-3.1-8B"
            lowered = {c.lower(): c for c in self.choices}
            close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        elif hint is None and len(self.choices) <= 12:
            hint = f"valid: {', '.join(self.choices)}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class GuardError(FtBrokerError):
    """A guard refused the operation before anything was spent."""

    exit_code = 3


class BudgetExceededError(GuardError):
    """The estimated cost is over the budget the user gave."""


class DoesNotFitError(GuardError):
    """The job does not fit the hardware; the message carries a concrete suggestion."""


class RouteUnavailableError(GuardError):
    """The provider does not accept this route (closed, past end of life, or not yet open)."""


class NotConfirmedError(GuardError):
    """The user answered no to the confirmation prompt."""


class JobBusyError(GuardError):
    """Another process is acting on the job (it holds the job's lease in the ledger): nothing was done; try again
    when it has finished. ``holder`` says who (a ``ftbroker.ledger.Lease``)."""

    def __init__(self, message: str, holder: object):
        self.holder = holder
        super().__init__(message)


class ExtraNotInstalledError(FtBrokerError):
    """An optional dependency is missing."""

    def __init__(self, package: str, extra: str, purpose: str, *, usage: bool = False):
        self.package, self.extra = package, extra
        if usage:  # an option the user chose needs it (plan --chart): a usage error, exit 2
            self.exit_code = InputError.exit_code
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'ftbroker[{extra}]'")


class BackendError(FtBrokerError):
    """A provider call failed. ``backend`` names the backend; ``request_id`` is the provider's, if any."""

    def __init__(self, message: str, *, backend: str, request_id: str | None = None):
        self.backend, self.request_id = backend, request_id
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{backend}: {message}{suffix}")


class BackendAuthError(BackendError):
    """The provider rejected the credentials (or there were none)."""


class BackendRateLimitError(BackendError):
    """The provider kept answering 429."""

    def __init__(self, message: str, *, backend: str, request_id: str | None = None,
                 retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message, backend=backend, request_id=request_id)


class BackendUnavailableError(BackendError):
    """The provider could not be reached, timed out, or kept failing with 5xx."""


class ProviderAPIError(BackendError):
    """The provider refused the request (a 4xx other than auth and rate limits)."""

    def __init__(self, message: str, *, backend: str, status_code: int, request_id: str | None = None):
        self.status_code = status_code
        super().__init__(message, backend=backend, request_id=request_id)


class JobError(FtBrokerError):
    """A problem with a job as a whole."""


class JobNotFoundError(JobError):
    """No job with this id (or id prefix) is in the ledger."""

    exit_code = 2


class JobFailedError(JobError):
    """The job ended in the failed state."""

    def __init__(self, job_id: str, reason: str):
        self.job_id = job_id
        super().__init__(f"job {job_id} failed: {reason}")


class LedgerError(FtBrokerError):
    """The job ledger cannot be read or written."""


class LedgerDamagedError(LedgerError):
    """The ledger file is damaged (a corrupted page, an unreadable row) or was lost while run folders remain: the
    message says how to recover (``ftbroker ledger rebuild``). ``readable``: the jobs that could still be read."""

    exit_code = 2

    def __init__(self, message: str, readable: Sequence = ()):
        self.readable = list(readable)
        super().__init__(message)
