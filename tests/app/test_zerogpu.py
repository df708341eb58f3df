"""studio.app.zerogpu: the spaces.GPU contract, with a stand-in `spaces` module (the decorator, not the hardware)."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from studio.app import zerogpu


@pytest.fixture
def fake_spaces(monkeypatch):
    calls = []

    def GPU(duration=60):  # noqa: N802 - the spaces package's name
        def wrap(fn):
            def run(*args, **kwargs):
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                calls.append((fn.__name__, seconds))
                return fn(*args, **kwargs)
            return run
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    return calls


def test_without_spaces_the_function_is_returned_unchanged(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def f(x):
        return x + 1

    assert zerogpu.on_gpu(10)(f) is f


def test_with_spaces_calls_run_under_gpu_with_a_duration_from_their_arguments(fake_spaces):
    @zerogpu.on_gpu(lambda model, steps: zerogpu.generation_seconds(model, steps, 81, 480, 832))
    def generate(model, steps):
        return f"{model}:{steps}"

    assert generate("Wan2.1-T2V-1.3B", 50) == "Wan2.1-T2V-1.3B:50"
    assert generate("tinyworld", 20) == "tinyworld:20"
    (_, wan), (_, tiny) = fake_spaces
    assert wan == pytest.approx(zerogpu.LOAD_S + 2 * 50 * zerogpu.WAN_STEP_S_AT_480P)  # baseline + tuned at 480p
    assert tiny == zerogpu.MIN_S


def test_durations_grow_with_steps_frames_and_size():
    d = lambda steps, f, h, w: zerogpu.generation_seconds("Wan2.1-T2V-1.3B", steps, f, h, w)  # noqa: E731
    assert d(4, 17, 256, 256) < d(8, 17, 256, 256) < d(8, 33, 256, 256) < d(8, 33, 480, 832) <= zerogpu.MAX_S
    assert d(1, 5, 32, 32) == pytest.approx(zerogpu.LOAD_S, abs=0.1)
    assert d(100, 121, 704, 1280) == zerogpu.MAX_S


def test_the_generate_handler_is_decorated_when_spaces_is_present(fake_spaces, tmp_path):
    import studio.ui.generate_tab as tab

    try:
        importlib.reload(tab)
        with pytest.raises(ValueError, match="prompt is empty"):
            tab.run_compare(None, "", 0, 20, 5.0, 17, 64, True, "tinyworld", "none")
        assert fake_spaces == [("run_compare", zerogpu.MIN_S)]
    finally:
        sys.modules.pop("spaces")
        importlib.reload(tab)
