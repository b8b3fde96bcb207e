import pytest

from ppbench.plan.actions import COMM_OPS, COMPUTE_OPS, Action, parse_action


@pytest.mark.parametrize("op", COMPUTE_OPS + COMM_OPS)
@pytest.mark.parametrize("mb,chunk", [(0, 0), (7, 0), (12, 3)])
def test_string_form_round_trips(op, mb, chunk):
    action = Action(op, mb, chunk)
    assert parse_action(str(action)) == action


def test_string_form_is_short():
    assert str(Action("F", 3)) == "F3"
    assert str(Action("SEND_B", 2, 1)) == "SEND_B2c1"


@pytest.mark.parametrize("text", ["X1", "F", "F-1", "SEND3", "f3", "B2c"])
def test_bad_strings_are_rejected(text):
    with pytest.raises(ValueError, match="cannot parse action"):
        parse_action(text)


def test_bad_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown action op"):
        Action("Q", 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        Action("F", -1)


def test_actions_are_hashable_values():
    assert len({Action("F", 1), Action("F", 1), Action("B", 1)}) == 2
