"""A Horovod training process killed mid-epoch: the run fails clearly, and the rerun resumes from the last checkpoint."""

from __future__ import annotations

import pytest

from kfr_spark.distributed import TrainingProcessLost, horovod_available
from kfr_spark.train import KILL_MID_EPOCH_ENV
from test_train import gold, train  # noqa: F401  (the planted lake and its training helper)

pytestmark = [pytest.mark.spark, pytest.mark.resilience, pytest.mark.slow,
              pytest.mark.skipif(not horovod_available(), reason="horovod is not installed")]


def test_a_training_process_killed_mid_epoch_resumes_from_its_last_checkpoint(spark, lake, gold, monkeypatch):  # noqa: F811
    settings = dict(num_proc=2, epochs=4, batch_size=32, patience=4, hyper={"kfri": {"dim": 8}})
    monkeypatch.setenv(KILL_MID_EPOCH_ENV, "1:2:1")  # rank 1 dies at the second step of epoch 2
    with pytest.raises(TrainingProcessLost, match="2-process training failed: .*exited with non-zero status"):
        train(spark, lake, gold, "kfri", **settings)
    monkeypatch.delenv(KILL_MID_EPOCH_ENV)
    resumed, _ = train(spark, lake, gold, "kfri", **settings)
    assert resumed.processes == 2
    assert resumed.resumed_from_epoch == 2  # epochs 0 and 1 were checkpointed before the kill
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
