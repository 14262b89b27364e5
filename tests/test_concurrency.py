"""Two terminals, a cron job and a retry script acting on one job at once: real processes, not threads.

Each round starts 3 to 8 processes at the same moment (a barrier), each running one ``ftbroker`` command through the
CLI on the same job, then counts what they did: remote jobs created on the provider's fake, trainers started in the
run folder. Whatever spends money or starts a process for a job must happen once per job, whoever asks; the others
are told who is at it (exit 3). The figures of every run go to the "ftbroker figures" summary.

The processes fork from a server that has the modules loaded (multiprocessing's forkserver), so a round costs
milliseconds of start-up, not seconds of imports.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import pytest
from jobsupport import wait_for, write_chat

from fakes import FakeOpenAI
from fakes.support import FAST
from ftbroker.broker import Broker
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

ROUNDS = 20
PROCESSES = (3, 8)
OPENAI_MODEL = "gpt-4o-mini-2024-07-18"


def _forkserver(monkeypatch):
    """Processes forked from a server with what the commands use loaded (it gets the tests folder on its path through
    the environment: Python 3.11's forkserver does not apply the parent's path before it preloads)."""
    tests = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (tests, os.environ.get("PYTHONPATH")))))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([
        "test_concurrency", "click.testing", "ftbroker.cli", "ftbroker.broker", "ftbroker.cli.job_view", "rich.console",
        "ftbroker.backends.openai", "ftbroker.backends.local.backend", "ftbroker.data.analysis", "ftbroker.pricing.catalog",
        "psutil", "httpx2", "httpcore2", "h11", "anyio", "openai.resources.files", "openai.types.fine_tuning",
        "openai.resources.fine_tuning.fine_tuning", "openai.resources.fine_tuning.jobs.jobs",  # what a client loads
        "forkserver_warm"])
    return context


def _command(args: list[str], env: dict[str, str], start: object, results: object) -> None:
    """One CLI process: ``ftbroker ARGS`` once every process of the round is ready (in a forked child)."""
    os.environ.clear()
    os.environ.update(env)
    from click.testing import CliRunner

    from ftbroker.cli import cli

    start.wait()
    outcome = CliRunner().invoke(cli, args)
    results.put((os.getpid(), outcome.exit_code, outcome.stdout, outcome.stderr))


@dataclass
class Race:
    """The processes of one round, started together; ``outcomes``: (pid, exit code, stdout, stderr) of each."""

    context: object
    env: dict[str, str]
    outcomes: list[tuple[int, int, str, str]] = field(default_factory=list)
    _processes: list = field(default_factory=list)
    _barriers: list = field(default_factory=list)  # kept: a barrier dropped here is gone before a child opens it
    _results: object = None

    def start(self, commands: list[list[str]]) -> None:
        self._results = self._results or self.context.Queue()
        self._barriers.append(self.context.Barrier(len(commands)))
        for args in commands:
            process = self.context.Process(target=_command, args=(args, self.env, self._barriers[-1], self._results))
            process.start()
            self._processes.append(process)

    def until(self, condition: Callable[[], bool], then: Callable[[], None] | None = None,
              timeout: float = 120.0) -> None:
        """Collect outcomes until ``condition()``; then run ``then`` (e.g. open the fake's gate)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"round stuck: {len(self.outcomes)} of {len(self._processes)} ended"
            gone = not any(p.is_alive() for p in self._processes)
            try:
                self.outcomes.append(self._results.get(timeout=0.02))
            except queue.Empty:
                assert not gone, f"a process died without an outcome: {[p.exitcode for p in self._processes]}"
        if then is not None:
            then()

    def finish(self) -> list[tuple[int, int, str, str]]:
        self.until(lambda: len(self.outcomes) == len(self._processes))
        for process in self._processes:
            process.join()
        return self.outcomes


def _kind(exit_code: int, stderr: str) -> str:
    """What one process's command came to, in a word."""
    if exit_code == 0:
        return "acted"
    if exit_code == 3 and "is busy: another ftbroker process is" in stderr:
        return "refused: busy"
    if exit_code == 2 and "only a failed or cancelled job can be resumed" in stderr:
        return "refused: already done"  # came after the one that acted had finished
    return f"exit {exit_code}: {stderr.strip()[-300:]}"


def _figures(what: str, made: str, counts: list[int], processes: list[int], outcomes: Counter, seconds: float) -> str:
    duplicates = sum(n - 1 for n in counts if n > 1)
    return (f"concurrency [{what}]: {len(counts)} rounds of {min(processes)}-{max(processes)} processes at once "
            f"({sum(processes)} in all) -> {sum(counts)} {made} where {len(counts)} were due, {duplicates} duplicates; "
            f"outcomes: {dict(sorted(outcomes.items()))}; {seconds:.1f} s")


EXPECTED = {"acted", "refused: busy", "refused: already done"}


@pytest.mark.usefixtures("catalog_day")  # the OpenAI route is open
def test_concurrent_submit_and_resumes_create_one_remote_job(tmp_path, monkeypatch, summary_line):
    """Every round one job: mostly a job recorded but never submitted (its CLI was killed) that N processes resume at
    once; every fourth round a job being submitted by `ftbroker run` that N-1 processes resume meanwhile. The
    provider is slow to answer the look-up that comes before a create (the fake holds it until every process has
    either reached it or ended): without one lease per job, each process finds nothing and creates a job."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-concurrency")
    data = write_chat(tmp_path / "data.jsonl")
    context, rng, begun = _forkserver(monkeypatch), random.Random(1), time.monotonic()
    created, sizes, outcomes, wrong = [], [], Counter(), []
    with FakeOpenAI() as fake, Ledger() as ledger:
        options = {**FAST, "base_url": fake.base_url}
        spec = JobSpec(dataset=str(data), model=OPENAI_MODEL, backend="openai", backend_options=options)
        run = ["run", str(data), "--backend", "openai", "--model", OPENAI_MODEL, "--yes", "--detach", "--json",
               *(a for key, value in options.items() for a in ("--option", f"{key}={value}"))]
        for round_ in range(ROUNDS):
            n = rng.randint(*PROCESSES)
            sizes.append(n)
            gate = fake.hold("jobs.list")
            race = Race(context, dict(os.environ))
            if round_ % 4 == 3:
                known = {j.id for j in ledger.list()}
                race.start([run])
                race.until(lambda: gate.arrived or race.outcomes)  # recorded, and at the look-up (or failed)
                [job_id] = {j.id for j in ledger.list()} - known
                commands = [["resume", job_id, "--detach", "--json"]] * (n - 1)
            else:
                job_id = ledger.create(spec).id
                commands = [["resume", job_id, "--detach", "--json"]] * n
            race.start(commands)
            race.until(lambda: gate.arrived + len(race.outcomes) >= n, then=gate.open)
            kinds = Counter(_kind(code, err) for _, code, _, err in race.finish())
            outcomes.update(kinds)
            remote = [j.id for j in fake.jobs.values() if j.request["metadata"]["ftbroker_job_id"] == job_id]
            created.append(len(remote))
            job = ledger.get(job_id)
            if remote != [job.remote.get("job_id")] or kinds["acted"] != 1 or set(kinds) - EXPECTED:
                wrong.append((round_, dict(kinds), remote))
    summary_line(_figures("openai submit/resume", "remote jobs", created, sizes, outcomes, time.monotonic() - begun))
    assert wrong == []  # each round: one remote job, the ledger's, one process that acted, the others refused


TRAINER = ("import os, time\n"
           "with open('starts.log', 'a') as log:\n"
           "    log.write(f'{os.getpid()}\\n')\n"
           "time.sleep(600)\n")  # a trainer that notes that it started, then runs until it is stopped


def _trainers_in(run_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if str(run_dir) in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE \
                and "trainer.py" in " ".join(proc.info["cmdline"]):
            found.append(proc)
    return found


def test_concurrent_resumes_of_a_local_job_start_one_trainer(tmp_path, monkeypatch, summary_line):
    """Every round N processes resume one cancelled local job at once: one trainer may start in its run folder, and
    `cancel` then stops every trainer there."""
    trainer = tmp_path / "trainer.py"
    trainer.write_text(TRAINER)
    spec = JobSpec(dataset=str(write_chat(tmp_path / "data.jsonl")), model="tiny",
                   backend_options={"trainer": str(trainer), "cancel_grace_s": 10})
    context, rng, begun = _forkserver(monkeypatch), random.Random(2), time.monotonic()
    started, sizes, outcomes, wrong = [], [], Counter(), []
    with Broker() as broker:
        job = broker.submit(spec)
        run_dir = broker.home / "runs" / job.id
        log = run_dir / "starts.log"
        try:
            assert broker.cancel(job.id).status is JobStatus.CANCELLED
            for round_ in range(ROUNDS):
                n = rng.randint(*PROCESSES)
                sizes.append(n)
                log.write_text("")
                race = Race(context, dict(os.environ))
                race.start([["resume", job.id, "--detach", "--json"]] * n)
                kinds = Counter(_kind(code, err) for _, code, _, err in race.finish())
                outcomes.update(kinds)
                # each trainer that was started notes it
                wait_for(lambda: len(log.read_text().split()) >= kinds["acted"], timeout=60, interval=0.01)
                started.append(len(log.read_text().split()))
                running = len(_trainers_in(run_dir))
                cancelled = broker.cancel(job.id).status
                left = _trainers_in(run_dir)  # cancel must have stopped every trainer of the job
                for proc in left:
                    proc.kill()
                if (started[-1], kinds["acted"], running, len(left)) != (1, 1, 1, 0) or set(kinds) - EXPECTED \
                        or cancelled is not JobStatus.CANCELLED:
                    wrong.append((round_, dict(kinds), started[-1], running, len(left)))
        finally:
            for proc in _trainers_in(run_dir):  # never leave one behind, whatever failed
                proc.kill()
    summary_line(_figures("local resume", "trainers started", started, sizes, outcomes, time.monotonic() - begun))
    assert wrong == []  # each round: one trainer started, by the one process that acted; none left after cancel
