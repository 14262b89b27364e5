"""``ftbroker catalog``: show the prices, GPUs and models in force (``ftbroker.cli.catalog_view`` draws them), refresh
the cloud prices, show how the user's runs correct the estimates, check a catalog file."""

from __future__ import annotations

import click

from ftbroker.cli.output import console, json_text


@click.group()
def catalog():
    """Show or check the prices, GPUs and models in force.

    The shipped catalog, your override file ($FTBROKER_HOME/catalog.toml, else catalog.toml in your config
    folder) and any --catalog files: a row with an existing key replaces the fields it gives, a new key adds one.
    FTBROKER_CATALOG_DIR, when set, names a folder whose gpus.csv, instances.csv, managed.toml and models.toml are
    read instead of the shipped ones (a catalog pinned as a whole).
    """


@catalog.command("show")
@click.option("--kind", type=click.Choice(["gpus", "instances", "managed", "models"]), help="Only this kind of row.")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file to merge (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_show(kind, catalog_files, as_json):
    """Show the catalog rows in force, their sources and age.

    Prices not checked against their source for 90 days are flagged (!). Example: ftbroker catalog show --kind gpus
    """
    from ftbroker import clock
    from ftbroker.cli import catalog_view
    from ftbroker.pricing.catalog import load_catalog

    cat = load_catalog(catalog_files)
    kinds = (kind,) if kind else catalog_view.CATALOG_KINDS
    if as_json:
        click.echo(json_text(catalog_view.catalog_json(cat, kinds, clock.today())))
    else:
        catalog_view.print_catalog(cat, kinds, clock.today(), console())


@catalog.command("update")
@click.option("--cloud", "clouds", multiple=True, metavar="CLOUD",
              help="Only this cloud (repeatable): aws, gcp, lambda, nebius, vast, fluidstack, cudo. Default: all.")
@click.option("--mirror", metavar="URL", help="Fetch through a mirror that answers GitHub's API and raw-file paths.")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_update(clouds, mirror, as_json):
    """Refresh cloud GPU prices from SkyPilot's published catalogs.

    Reads each cloud's vms.csv at its newest commit in github.com/skypilot-org/skypilot-catalog (over the network),
    keeps the cheapest region of each GPU instance type, and writes the rows with that commit and its date to your
    catalog folder (catalog/ beside your override file), where every plan reads them. Prints what changed. Nothing
    is written unless every cloud asked for was read and validates.

    \b
    Example:
      ftbroker catalog update --cloud aws --cloud gcp
    """
    from ftbroker import catalog_update, clock
    from ftbroker.cli.catalog_view import print_catalog_update
    from ftbroker.errors import InputError
    from ftbroker.pricing.refresh import CLOUDS

    unknown = sorted(set(clouds) - set(CLOUDS))
    if unknown:
        raise InputError(f"--cloud {', '.join(unknown)}: SkyPilot's current catalog has no such cloud "
                         f"(valid: {', '.join(CLOUDS)})")
    today = clock.today()
    updates, written = catalog_update.update(clouds, today, mirror=mirror)
    if as_json:
        click.echo(json_text({"today": today.isoformat(), "written": [str(p) for p in written],
                              "clouds": [u.to_json() for u in updates]}))
    else:
        print_catalog_update(updates, written, console())


@catalog.command("calibration")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_calibration(as_json):
    """Show how your own runs correct the estimates: per GPU, method and stack.

    Every succeeded job whose trainer measured it on the GPU it was estimated for (peak VRAM, tokens/s) keeps the
    estimate beside the measurement in the ledger; `ftbroker estimate`, `plan` and `run` scale their figures for
    that GPU, method and stack by the median measured/estimated ratio, shrunk toward 1 as if 2 more runs had
    matched the estimate, at most halved or doubled. Example: ftbroker catalog calibration --json
    """
    from ftbroker.cli.catalog_view import print_calibration
    from ftbroker.estimate import measured
    from ftbroker.pricing.catalog import load_catalog
    from ftbroker.your_runs import corrections

    found = corrections(load_catalog())
    if as_json:
        click.echo(json_text({"rule": {"prior_runs": measured.PRIOR_RUNS, "max_factor": measured.MAX_FACTOR},
                              "corrections": found.to_json()}))
    else:
        print_calibration(found, console())


@catalog.command("validate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def catalog_validate(file):
    """Check the catalog in force, or FILE merged over it.

    Exit status 2 with FILE:LINE: field: problem for each bad row. Example: ftbroker catalog validate my.toml
    """
    from ftbroker import clock
    from ftbroker.pricing.catalog import base_catalog_dir, load_catalog, user_override_path
    from ftbroker.pricing.catalog.load import CATALOG_DIR_ENV, DATA_DIR

    cat = load_catalog([file] if file else ())
    base = base_catalog_dir()
    checked = file or (user_override_path() if user_override_path().is_file() else
                       "shipped catalog" if base == DATA_DIR else f"catalog folder {base} ({CATALOG_DIR_ENV})")
    click.echo(f"ok: {checked}: {len(cat.gpus)} GPUs, {len(cat.instances)} instances, {len(cat.managed)} managed "
               f"offers, {len(cat.models)} models in force (catalog {cat.version})")
    stale = cat.stale_rows(clock.today())
    if stale:
        click.echo(f"warning: {len(stale)} priced row(s) not checked against their source for 90 days (ftbroker "
                   "catalog show; ftbroker catalog update refreshes the cloud prices)", err=True)

