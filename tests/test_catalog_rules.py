"""The catalog's rules on prices: self-contradicting upstream rows, the stale mark, and `ftbroker catalog update`
(SkyPilot's catalogs, read from a loopback stand-in of GitHub). Logic tests read the fixture catalog in
tests/fixtures/catalog, so refreshing a shipped price never breaks them."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.skypilot_catalog_fake import SkypilotCatalogFake
from ftbroker.cli import cli
from ftbroker.pricing.catalog import is_stale, load_catalog, user_catalog_dir

FIXTURE = Path(__file__).parent / "fixtures" / "catalog"
HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone"


@pytest.fixture
def fixture_catalog():
    return load_catalog(data_dir=FIXTURE)


def instance(cat, cloud, name):
    return next(i for i in cat.instances if (i.cloud, i.instance_type) == (cloud, name))


# --- self-contradicting upstream rows ------------------------------------------------------------------------

def test_a_spot_price_above_on_demand_is_left_out_with_the_reason(fixture_catalog):
    h100 = instance(fixture_catalog, "beta", "b-h100")
    assert h100.on_demand_usd_per_hour == Decimal("4.00") and h100.spot_usd_per_hour is None
    assert "spot price left out: 4.50 $/h was above the on-demand 4.00 $/h" in h100.note
    assert not h100.price_doubt  # the on-demand price itself is not in question


def test_a_larger_card_cheaper_than_the_smaller_one_on_the_same_cloud_is_doubted(fixture_catalog):
    doubted = {(i.cloud, i.instance_type) for i in fixture_catalog.doubted()}
    assert doubted == {("alpha", "a-1x80")}  # 2.50 < the 40 GB card's 3.00 on alpha, one GPU each
    row = instance(fixture_catalog, "alpha", "a-1x80")
    assert row.price_doubt in row.note and "A100-SXM-40GB (3.00)" in row.price_doubt
    # kept: the price is shown with its doubt, not dropped; other clouds and GPU counts are not compared
    assert row.on_demand_usd_per_hour == Decimal("2.50")
    assert not instance(fixture_catalog, "alpha", "a-2x80").price_doubt
    assert not instance(fixture_catalog, "beta", "b-1x80").price_doubt


def test_the_rules_apply_to_a_users_own_rows_too(tmp_path, fixture_catalog):
    own = tmp_path / "mine.csv"
    own.write_text("cloud,instance_type,gpu,gpu_count,on_demand_usd_per_hour,spot_usd_per_hour,region,source,as_of\n"
                   "beta,b-40,A100-SXM-40GB,1,2.50,2.80,r2,my quote,2026-06-02\n")
    cat = load_catalog([own], data_dir=FIXTURE)
    assert instance(cat, "beta", "b-40").spot_usd_per_hour is None  # spot above on-demand: left out
    assert instance(cat, "beta", "b-1x80").price_doubt  # now the 80 GB card (2.00) is cheaper than the 40 GB one


# --- the stale mark -------------------------------------------------------------------------------------------

def test_a_price_is_stale_90_days_after_it_was_last_checked(fixture_catalog):
    day = date(2026, 8, 29)
    l4, a40 = instance(fixture_catalog, "gamma", "g-l4"), instance(fixture_catalog, "alpha", "a-1x40")
    old = instance(fixture_catalog, "beta", "b-4090")
    assert is_stale(l4, day)  # never verified: its as_of (2026-01-15) counts
    assert not is_stale(a40, day) and not is_stale(old, day)  # checked 2026-06-01, whatever its as_of
    assert is_stale(a40, date(2026, 9, 1))  # 92 days
    offer = fixture_catalog.managed[0]
    assert not is_stale(offer, date(2026, 11, 30)) and is_stale(offer, date(2026, 12, 1))
    assert {r.instance_type for r in fixture_catalog.stale_rows(day) if hasattr(r, "cloud")} == {"g-l4"}


# --- ftbroker catalog update ----------------------------------------------------------------------------------

@pytest.fixture
def github():
    with SkypilotCatalogFake() as server:
        yield server


def update(github, *args):
    return CliRunner().invoke(cli, ["catalog", "update", "--mirror", github.origin, *args])


def test_update_writes_the_newest_commit_with_its_date_and_shows_what_changed(github, monkeypatch):
    monkeypatch.setenv("FTBROKER_NOW", "2026-12-07")
    before = load_catalog()
    known = next(i for i in before.instances if i.cloud == "aws" and i.on_demand_usd_per_hour)
    gone = next(i for i in before.instances if i.cloud == "aws" and i.instance_type != known.instance_type)
    new_price = (known.on_demand_usd_per_hour * Decimal("0.9")).quantize(Decimal("0.0001"))
    github.publish("aws", f"{HEADER}\n" f"{known.instance_type},A100,8,96,1152,,99.0,,us-east-1,\n", date(2026, 10, 1))
    github.publish("aws", f"{HEADER}\n"
                   f"{known.instance_type},{known.gpu},{known.gpu_count},96,1152,,{new_price},,us-west-2,us-west-2a\n"
                   f"{known.instance_type},{known.gpu},{known.gpu_count},96,1152,,{new_price + 1},0.5,eu-west-1,\n"
                   "g9.xlarge,L4,1,4,16,,0.80,0.90,us-east-1,\n"  # spot above on-demand: the loader drops it
                   "g6f.large,L4,0.125,2,8,,0.20,,us-east-1,\n"  # a fraction of a GPU: left out
                   "z1.xlarge,Z9000,1,4,16,,1.00,,us-east-1,\n"   # a GPU the catalog does not know: left out
                   "m5.large,,,2,8,,0.09,,us-east-1,\n", date(2026, 12, 1))  # no GPU: not a GPU instance
    result = update(github, "--cloud", "aws", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    aws = doc["clouds"][0]
    assert aws["as_of"] == "2026-12-01" and aws["source"].startswith("skypilot-org/skypilot-catalog@")
    assert aws["left_out"] == {"a fraction of a GPU": 1, "GPU not in the catalog: Z9000": 1}
    moved = {c["instance_type"]: c for c in aws["changes"]}
    assert moved[known.instance_type]["change"] == "price"
    assert moved[known.instance_type]["on_demand_usd_per_hour"] == [float(known.on_demand_usd_per_hour),
                                                                   float(new_price)]
    assert moved["g9.xlarge"]["change"] == "new" and moved[gone.instance_type]["change"] == "gone"

    written = user_catalog_dir() / "instances-aws.csv"
    assert doc["written"] == [str(written)] and written.is_file()
    after = load_catalog()
    row = instance(after, "aws", known.instance_type)
    assert row.on_demand_usd_per_hour == new_price and row.region == "us-west-2"
    assert row.spot_usd_per_hour == Decimal("0.5") and row.spot_region == "eu-west-1"
    assert (row.as_of, row.verified) == (date(2026, 12, 1), date(2026, 12, 7)) and not is_stale(row, date(2026, 12, 7))
    assert instance(after, "aws", "g9.xlarge").spot_usd_per_hour is None  # the loader's rule, on refreshed rows too
    assert instance(after, "aws", gone.instance_type) == gone  # not listed any more: kept as it was


def test_update_prints_a_summary_and_writes_nothing_when_a_cloud_fails(github, monkeypatch):
    from fakes._server import Fault

    monkeypatch.setenv("FTBROKER_NOW", "2026-12-07")
    github.publish("lambda", f"{HEADER}\ngpu_1x_h100_sxm5,H100,1,26,200,,2.49,,us-east-1,\n", date(2026, 11, 30))
    github.publish("nebius", f"{HEADER}\ngpu-h100-sxm_1gpu,H100,1,16,200,,2.95,1.25,eu-north1,\n", date(2026, 11, 30))
    github.faults.at("raw", 2, Fault.error(503))  # the second cloud's file
    failed = update(github, "--cloud", "lambda", "--cloud", "nebius")
    assert failed.exit_code == 1 and "HTTP 503" in failed.output and "Traceback" not in failed.output
    assert not user_catalog_dir().exists() or not list(user_catalog_dir().glob("*.csv"))  # all or none

    done = update(github, "--cloud", "lambda", "--cloud", "nebius")
    assert done.exit_code == 0, done.output
    assert "lambda: 1 GPU instance types from @" in done.output and "(2026-11-30)" in done.output
    assert "wrote " in done.output and "instances-nebius.csv" in done.output


def test_gcp_instances_are_the_host_plus_its_gpus_in_one_region(github, monkeypatch):
    monkeypatch.setenv("FTBROKER_NOW", "2026-12-07")
    github.publish("gcp", f"{HEADER}\n"
                   "a2-highgpu-1g,,,12,85,,0.70,0.30,us-central1,\n"
                   "a2-highgpu-1g,,,12,85,,0.60,0.20,europe-west4,\n"
                   ",A100,1,,,,2.90,1.00,us-central1,\n"   # no host price in asia: that GPU price is unusable
                   ",A100,1,,,,2.00,0.50,asia-east1,\n", date(2026, 11, 30))
    assert update(github, "--cloud", "gcp").exit_code == 0
    row = instance(load_catalog(), "gcp", "a2-highgpu-1g")
    assert (row.gpu, row.gpu_count, row.region) == ("A100-SXM-40GB", 1, "us-central1")
    assert (row.on_demand_usd_per_hour, row.spot_usd_per_hour) == (Decimal("3.60"), Decimal("1.30"))


def test_update_refuses_a_cloud_skypilot_does_not_list(github):
    result = update(github, "--cloud", "azure-classic")
    assert result.exit_code == 2 and "no such cloud" in result.output
