"""FLOPs per evaluation against a hand count."""

from __future__ import annotations

import pytest

from autoguidance.nets.flops import flops_per_evaluation
from autoguidance.nets.precond import NetConfig, build

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_match_a_hand_count():
    """One level at 8x8, width 4, one block, no attention resolutions (the decoder's first block always
    attends). MACs per module, counted by hand from the architecture:
      emb_noise 4x4 = 16; input conv 3x3 2->4: 256 outputs x 18 = 4608;
      enc block (4->4): two 3x3 convs 256 x 36 each + emb linear 16 = 18448;
      dec in0: 18448 + qkv 1x1 4->12: 768 x 4 = 3072 + proj 256 x 4 = 1024 + attention 2 x 4 x 64^2 = 32768;
      dec in1: 18448; two dec blocks 8->4: 3x3 256 x 72 + 3x3 256 x 36 + skip 1x1 256 x 8 + 16 = 29712 each;
      output conv 3x3 4->1: 64 x 36 = 2304. Sum 158560 MACs = 317120 FLOPs."""
    cfg = NetConfig(
        img_resolution=8,
        img_channels=1,
        label_dim=0,
        model_channels=4,
        channel_mult=(1,),
        num_blocks=1,
        attn_resolutions=(),
    )
    assert flops_per_evaluation(build(cfg)) == 317_120
