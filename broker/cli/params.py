"""What the commands' flags share: numbers held to their bounds, ``--json``, ``--option KEY=VALUE``, the stacks."""

from __future__ import annotations

import click

# estimate.stacks.STACKS, spelt out so that --help need not import the estimator (a test keeps them equal)
STACK_NAMES = ("ftbroker", "hf", "unsloth", "axolotl", "llamafactory", "litgpt", "torchtune")


class Bounded(click.ParamType):
    """A whole number held to its plausibility bound (``ftbroker.bounds``); a refusal says why (exit 2)."""

    name = "integer"

    def __init__(self, bound: str):
        self.bound = bound

    def convert(self, value, param, ctx):
        from ftbroker import bounds

        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        why = bounds.problem(self.bound, number)
        if why is not None:
            self.fail(f"{number}: {why}", param, ctx)
        return number


class Amount(click.ParamType):
    """A positive amount (dollars, hours): a refusal says why (exit 2)."""

    name = "number"

    def __init__(self, flag: str):
        self.flag = flag

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(str(value).strip().removeprefix("$"))
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not 0 < number < math.inf:
            self.fail(f"{value}: must be more than 0", param, ctx)
        return number


def json_option(f):
    return click.option("--json", "json_mode", is_flag=True, help="Print only JSON on stdout.")(f)


def job_command(f):
    """A command about one job: JOB (an id, or a unique prefix of one) and --json."""
    return click.command()(click.argument("job_id", metavar="JOB")(json_option(f)))


def option_values(options: tuple[str, ...]) -> tuple[dict, list[str]]:
    """``--option KEY=VALUE`` flags as {key: value} (YAML scalars: "2" -> 2, "true" -> True), and the problems."""
    import yaml

    from ftbroker.spec import load_yaml

    values, problems = {}, []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            problems.append(f"--option {option!r}: write KEY=VALUE")
            continue
        try:
            values[key.strip()] = load_yaml(value)  # "2" -> 2, "true" -> True
        except yaml.YAMLError:
            values[key.strip()] = value
    return values, problems
