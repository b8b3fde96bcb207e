"""The action vocabulary: one Op enum, PyTorch's action text both ways, and stage placements."""

import pytest

from ppbench.plan.actions import COMM_OPS, COMPUTE_OPS, Action, Op, parse_action
from ppbench.plan.placement import Placement


@pytest.mark.parametrize("op", COMPUTE_OPS + COMM_OPS)
@pytest.mark.parametrize("stage,mb", [(0, 0), (0, 7), (12, 3), (3, 120)])
def test_text_form_round_trips(op, stage, mb):
    action = Action(stage, op, mb)
    assert parse_action(str(action)) == action


def test_text_form_is_pytorchs():
    assert str(Action(0, Op.F, 3)) == "0F3"
    assert str(Action(1, Op.I, 2)) == "1I2"
    assert str(Action(2, Op.W, 0)) == "2W0"
    assert str(Action(2, Op.SEND_B, 0)) == "2SEND_B0"
    assert str(Action(0, Op.RECV_B, 11)) == "0RECV_B11"


@pytest.mark.parametrize("text", ["0F3", "1I2", "2W0", "1B2", "1SEND_F3", "0RECV_B1", "10RECV_F12"])
def test_pytorchs_own_parser_reads_what_ppbench_writes_and_back(text):
    """The text round-trips through torch.distributed.pipelining's _Action (stage, type, microbatch)."""
    from torch.distributed.pipelining.schedules import _Action

    theirs = _Action.from_str(text)
    ours = parse_action(text)
    assert (theirs.stage_index, theirs.computation_type.value, theirs.microbatch_index) == \
        (ours.stage, ours.op.value, ours.mb)
    assert str(theirs) == str(ours) == text


def test_split_backward_names_map_onto_pytorchs():
    # ppbench v1's zero-bubble "B" (input gradient) is PyTorch's I; W is W; B is the full backward
    assert [op.meaning for op in (Op.I, Op.W, Op.B)] == ["input gradient", "weight gradient", "full backward"]
    assert Op.I.is_backward and Op.B.is_backward and not Op.W.is_backward
    assert (Op.I.direction, Op.B.direction, Op.W.direction) == ("B", "B", "W")


@pytest.mark.parametrize("text", ["X1", "F", "F3", "0F", "0f3", "-1F3", "0SEND3", "0F3c1", "B2c"])
def test_bad_strings_are_rejected(text):
    with pytest.raises(ValueError, match="cannot parse action"):
        parse_action(text)


def test_fsdp_actions_are_named_as_such():
    with pytest.raises(ValueError, match="FSDP actions"):
        parse_action("0UNSHARD")


def test_bad_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown action op 'Q'"):
        Action(0, "Q", 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        Action(0, Op.F, -1)
    with pytest.raises(ValueError, match="must be >= 0"):
        Action(-1, Op.F, 0)


def test_actions_are_hashable_values():
    assert len({Action(0, Op.F, 1), Action(0, "F", 1), Action(0, Op.B, 1), Action(1, Op.F, 1)}) == 3


def test_looped_placement():
    placement = Placement.looped(3, 2)
    assert placement.stage_ranks == (0, 1, 2, 0, 1, 2)
    assert placement.stages_of(1) == (1, 4)
    assert [placement.chunk_of(s) for s in range(6)] == [0, 0, 0, 1, 1, 1]
    assert (placement.p, placement.v, placement.num_stages) == (3, 2, 6)


def test_v_placement():
    placement = Placement.vshape(4)
    assert placement.stage_ranks == (0, 1, 2, 3, 3, 2, 1, 0)
    assert [placement.stages_of(r) for r in range(4)] == [(0, 7), (1, 6), (2, 5), (3, 4)]
    assert placement.chunk_of(7) == 1 and placement.chunk_of(3) == 0


def test_placement_must_give_every_rank_a_stage():
    with pytest.raises(ValueError, match=r"rank\(s\) \[1\] hold none"):
        Placement((0, 2, 0))
    with pytest.raises(ValueError, match="unknown placement 'ring'; allowed: looped, v"):
        Placement.named("ring", 2)
