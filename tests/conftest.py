"""Shared test set-up: every test runs offline, without provider credentials, in its own FTBROKER_HOME."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

from ftbroker.pricing.catalog.load import CATALOG_DIR_ENV, load_catalog

# Set before anything imports huggingface_hub: tests never reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# The tiny models gain nothing from intra-op threads, and on a busy 2-core machine torch's spinning threads double
# the CPU time of a training run (measured: LoRA tiny run 8.5 s CPU with 1 thread, 17.8 s with 2). Inherited by
# the trainer processes the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# What a test module reads at import (estimate_fixtures loads the catalog) must not see the user's own catalog
# override or ledger; each test then gets a home of its own (_isolated).
_IMPORT_HOME = tempfile.TemporaryDirectory(prefix="ftbroker-tests-")
os.environ["FTBROKER_HOME"] = _IMPORT_HOME.name
# Nor a catalog folder the user pinned: a test reads the shipped catalog unless it asks for the frozen one (below).
os.environ.pop(CATALOG_DIR_ENV, None)

# Google's credential discovery never asks the metadata server (a network call) in tests: read at google.auth import.
os.environ["NO_GCE_CHECK"] = "true"

_CREDENTIAL_PREFIXES = ("OPENAI_", "TOGETHER_", "AWS_", "AZURE_OPENAI", "ANTHROPIC_", "FIREWORKS_", "GOOGLE_",
                        "CLOUDSDK_")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    for name in list(os.environ):
        if name.startswith(_CREDENTIAL_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FTBROKER_HOME", str(tmp_path_factory.mktemp("ftbroker-home")))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path_factory.mktemp("gcloud")))  # no gcloud credentials of the user's
    monkeypatch.delenv("FTBROKER_GPU", raising=False)  # a test plans for the GPU it names


# A copy of the shipped catalog that is never refreshed (tests/fixtures/frozen_catalog/README.md): a test of logic
# computes its expected prices, dates and routes from it, so a refreshed shipped price moves none of them.
FROZEN_CATALOG = Path(__file__).parent / "fixtures" / "frozen_catalog"


@pytest.fixture(scope="module")
def frozen_catalog():
    """The frozen catalog in force for a whole module (``pytestmark = pytest.mark.usefixtures("frozen_catalog")``):
    every catalog read, in this process and the ones it starts, reads it (FTBROKER_CATALOG_DIR). Returns it loaded."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CATALOG_DIR_ENV, str(FROZEN_CATALOG))
        yield load_catalog()


# A day the frozen catalog's managed routes are open (its OpenAI rows close on 2027-01-06). A test of how a backend
# or the plan treats an open route sets the clock to it; CI runs the suite again 400 days ahead.
CATALOG_DAY = date(2026, 11, 28)


@pytest.fixture
def catalog_day(monkeypatch):
    """The frozen catalog in force (as ``frozen_catalog`` sets it, for this test) and the clock moved to CATALOG_DAY,
    still running (jobs made one after another keep their order): the day is one of that catalog's."""
    monkeypatch.setenv(CATALOG_DIR_ENV, str(FROZEN_CATALOG))
    monkeypatch.setenv("FTBROKER_NOW", f"{(CATALOG_DAY - date.today()).days:+d}d")


@pytest.fixture
def nvidia_smi(tmp_path_factory, monkeypatch):
    """``nvidia_smi(*gpus, output=None)``: this machine's GPUs as the test says, for the rest of the test: an
    ``nvidia-smi`` first on PATH that reports them (``tests/fakes/nvidia_smi.py``); none given, no GPU."""
    from fakes import nvidia_smi

    return lambda *gpus, output=None: nvidia_smi.install(monkeypatch, tmp_path_factory.mktemp("nvidia-smi"), *gpus,
                                                         output=output)


@pytest.fixture
def no_gpu(nvidia_smi):
    """A machine without a GPU, whatever runs the tests (the plan of one with a GPU has local routes)."""
    nvidia_smi()


@pytest.fixture
def plugin_backends(tmp_path_factory, monkeypatch):
    """``plugin_backends(name="module:Class", ...)``: backends installed for the rest of the test the way a package
    installs one, a distribution on sys.path whose entry points (group ``ftbroker.backends``) name them, so the
    registry finds them as it finds any plug-in."""
    from ftbroker.backends.registry import ENTRY_POINT_GROUP

    def install(**targets: str) -> None:
        site = tmp_path_factory.mktemp("site")
        dist = site / f"ftbroker_test_plugins_{site.name}-0.dist-info"  # one distribution per call
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ftbroker-test-plugins-{site.name}\n"
                                       "Version: 0\n")
        (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" +
                                               "".join(f"{name} = {target}\n" for name, target in targets.items()))
        monkeypatch.syspath_prepend(str(site))

    return install


# --- tiny real models (built once per session; see tests/tinymodels.py) -------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved 2-layer Llama + ChatML tokenizer (template without generation markers)."""
    from tinymodels import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def ec2_instance_python(tmp_path_factory):
    """The Python of the EC2 instances the tests play (tests/fakes/ec2_fake.py): a venv over this one's packages."""
    from fakes.ec2_fake import instance_python

    return instance_python(tmp_path_factory.mktemp("ami-python"))


# --- figures a test wants shown in every run's output (plain `pytest`, no -s) -------------------------------
# Kept in the test's report (user_properties), which pytest-xdist carries from its workers to the run's summary.
_FIGURE = "ftbroker-figure"
_LINES: list[str] = []  # in the process that prints the summary


@pytest.fixture
def summary_line(request):
    """``summary_line("...")`` adds a line to the "ftbroker figures" section printed at the end of the run."""
    return lambda line: request.node.user_properties.append((_FIGURE, line))


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        _LINES.extend(line for key, line in report.user_properties if key == _FIGURE)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _LINES:
        terminalreporter.section("ftbroker figures")
        for line in _LINES:
            terminalreporter.write_line(line)
