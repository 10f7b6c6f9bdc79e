"""Restoring contexts: reference-counted per (object, attribute), so nesting, re-entry, out-of-order exits,
errors, KeyboardInterrupt and threads all leave the original values behind."""

import threading
from types import SimpleNamespace

import pytest
from torch import nn

from xvit.utils.context import eval_mode, set_attributes


def test_out_of_order_exits_restore_the_original_once_the_last_context_exits():
    obj = SimpleNamespace(flag="original")
    first, second = set_attributes([(obj, "flag", "a")]), set_attributes([(obj, "flag", "b")])
    first.__enter__()
    second.__enter__()
    assert obj.flag == "b"
    first.__exit__(None, None, None)  # the first one out of order: the still-open context's value holds
    assert obj.flag == "b"
    second.__exit__(None, None, None)
    assert obj.flag == "original"


def test_nested_contexts_restore_the_outer_value_then_the_original():
    obj = SimpleNamespace(flag=1)
    with set_attributes([(obj, "flag", 2)]):
        with set_attributes([(obj, "flag", 3)]):
            assert obj.flag == 3
        assert obj.flag == 2
    assert obj.flag == 1


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_errors_inside_restore(error):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    with pytest.raises(error), eval_mode(model), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise error
    assert all(m.training for m in model.modules())


def test_eval_mode_keeps_each_modules_own_flag():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    model[0].eval()
    outer = eval_mode(model)
    outer.__enter__()
    with eval_mode(model):
        pass
    assert not any(m.training for m in model.modules())  # the outer context is still open
    outer.__exit__(None, None, None)
    assert [m.training for m in model.modules()] == [True, False, True]


def test_threads_entering_and_leaving_in_any_order_restore_the_original():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)]).train()
    start, inside = threading.Barrier(8), threading.Barrier(8)
    seen = []

    def work():
        start.wait()
        with eval_mode(model):
            inside.wait()  # all eight are inside at once
            seen.append(any(m.training for m in model.modules()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [False] * 8
    assert all(m.training for m in model.modules())
