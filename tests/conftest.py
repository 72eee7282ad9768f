"""Shared fixtures: one real local Spark session with Delta for the whole test run, and a fresh lakehouse
folder per test module so tests never see each other's tables."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real fixtures not found at {FIXTURES} (shared/ must sit beside the clone)")
    return FIXTURES


@pytest.fixture(scope="session")
def base_config(tmp_path_factory):
    from kfr_spark.config import load_config

    root = tmp_path_factory.mktemp("lakehouse")
    return load_config(
        REPO / "conf" / "local.yaml",
        overrides=[f"lakehouse.root={root}", "spark.master=local[2]", "spark.driver_memory=2g",
                   "spark.shuffle_partitions=4"],
        environ={},
    )


@pytest.fixture(scope="session")
def spark(base_config):
    from kfr_spark.session import build_session

    session = build_session(base_config, "kfr-tests")
    yield session
    session.stop()


@pytest.fixture()
def lake(tmp_path):
    """A fresh, empty lakehouse for one test."""
    from kfr_spark.catalog import Lakehouse

    return Lakehouse(tmp_path / "lakehouse")


@pytest.fixture()
def config_for(base_config):
    """The test config pointed at a given lakehouse."""

    def make(lake):
        return base_config.model_copy(
            update={"lakehouse": base_config.lakehouse.model_copy(update={"root": Path(lake.root)})}
        )

    return make
