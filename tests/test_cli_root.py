"""The root command: version, usage errors, and the help that introduces every command."""

import re

import click
from click.testing import CliRunner

from ftbroker import __version__
from ftbroker.backends.local.config import TrainConfig
from ftbroker.cli import cli
from ftbroker.cli.root import _Root


def help_text(*args) -> str:
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2


def test_help_lists_every_command_in_order_each_with_a_whole_line():
    assert sorted(_Root.ORDER) == sorted(cli.commands)
    listed = help_text().split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == list(_Root.ORDER)
    assert not [line for line in listed if line.endswith("...")]  # no description cut short at 80 columns


def test_every_command_and_option_has_help():
    def commands(group, path=()):
        for name, command in group.commands.items():
            yield (*path, name), command
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))

    for path, command in commands(cli):
        assert command.help, path
        assert [p.name for p in command.params if isinstance(p, click.Option) and not p.help] == [], path


def test_run_help_names_the_local_trainers_defaults():
    text = " ".join(help_text("run").split())
    defaults = TrainConfig(model="m", dataset="d")
    for flag, value in (("--epochs", defaults.epochs), ("--learning-rate", defaults.learning_rate),
                        ("--micro-batch", defaults.micro_batch_size),
                        ("--grad-accum", defaults.gradient_accumulation_steps),
                        ("--max-seq-len", defaults.max_seq_len), ("--lora-r", defaults.lora.r),
                        ("--lora-alpha", defaults.lora.alpha), ("--lora-dropout", defaults.lora.dropout)):
        said = re.search(re.escape(flag) + r"[ ,][^(]*\(local default: ([0-9.e-]+)\)", text)
        assert said and float(said.group(1)) == value, flag
    assert defaults.gradient_checkpointing and "(local default: on)" in text


def test_estimate_help_lists_the_estimators_optimizers():
    from ftbroker.estimate.setup import OPTIMIZERS

    text = " ".join(help_text("estimate").split())
    assert ", ".join(OPTIMIZERS) + " (default: the stack's)." in text


def test_estimate_stack_choices_are_the_estimators_stacks():
    from ftbroker.cli.params import STACK_NAMES
    from ftbroker.estimate.stacks import STACKS

    assert STACK_NAMES == tuple(STACKS)
