"""Communication time across nodes (ftbroker.estimate.comm): ring volumes over the inter-node link."""

import pytest

from ftbroker.errors import InputError
from ftbroker.estimate.comm import comm_seconds_per_step


def test_ddp_all_reduces_the_gradients_once():
    # 16 ranks, 1 GB of gradients, 10 GB/s: 2 x 15/16 GB through the link
    assert comm_seconds_per_step(param_bytes=50e9, grad_bytes=1e9, ranks=16, sharded=False,
                                 link_gb_per_s=10) == pytest.approx(2 * 15 / 16 / 10)


def test_fsdp_moves_the_parameters_twice_and_the_gradients_once():
    # 70B parameters in fp32 (amp: fp32 master weights): 280 GB each way, 2 ranks, 400 GB/s
    seconds = comm_seconds_per_step(param_bytes=280e9, grad_bytes=280e9, ranks=2, sharded=True, link_gb_per_s=400)
    assert seconds == pytest.approx(0.5 * 3 * 280 / 400)
    # ZeRO-3 moves 1.5x what DDP moves for the same model
    ddp = comm_seconds_per_step(param_bytes=280e9, grad_bytes=280e9, ranks=2, sharded=False, link_gb_per_s=400)
    assert seconds == pytest.approx(1.5 * ddp)


def test_one_rank_does_not_communicate():
    assert comm_seconds_per_step(param_bytes=1e9, grad_bytes=1e9, ranks=1, sharded=True, link_gb_per_s=1) == 0


def test_a_link_without_bandwidth_is_refused():
    with pytest.raises(InputError, match="link bandwidth"):
        comm_seconds_per_step(param_bytes=1, grad_bytes=1, ranks=2, sharded=False, link_gb_per_s=0)
