"""Progress bars and start-up lines (issue 32, fine_tune/progress.py): a bar on stderr unless TQDM_DISABLE says
otherwise, read when the bar is made; nothing from a torchrun rank but 0 (faked here by its environment, as
torchrun sets it); other libraries' bars (the Hugging Face hub's downloads) follow the same rule. The bars of the
real commands are checked in their own tests' runs (evaluation, logits and predictions: test_user_tasks.py; the
evaluation during training: test_eval_during_training.py; the ONNX check: test_onnx_export.py; downloads:
test_download.py); the start-up lines under a real two-process torchrun in test_distributed.py."""

from __future__ import annotations

import contextlib
import io

import pytest

from fine_tune import progress as p


def drawn(monkeypatch, env: dict[str, str | None], **kwargs) -> tuple[str, str]:
    """What one bar over 3 items (and one say()) writes to stderr under ``env``; returns (bar, said)."""
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert list(p.progress(range(3), desc="counting", unit="rows", **kwargs)) == [0, 1, 2]
    bar = err.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        p.say("a start-up line")
    return bar, err.getvalue()


ONE = {"WORLD_SIZE": None, "RANK": None}


@pytest.mark.parametrize(
    "env, shown",
    [
        ({**ONE, "TQDM_DISABLE": None}, True),
        ({**ONE, "TQDM_DISABLE": "1"}, False),
        ({**ONE, "TQDM_DISABLE": "true"}, False),
        ({**ONE, "TQDM_DISABLE": "0"}, True),  # off only where it says so (tqdm itself takes any value as true)
        ({"WORLD_SIZE": "2", "RANK": "0", "TQDM_DISABLE": None}, True),  # torchrun's rank 0 speaks for the job
        ({"WORLD_SIZE": "2", "RANK": "1", "TQDM_DISABLE": None}, False),  # ... the others draw nothing
    ],
)
def test_a_bar_is_drawn_on_stderr_unless_disabled_or_another_rank(monkeypatch, env, shown):
    bar, said = drawn(monkeypatch, env)
    assert ("counting: 100%" in bar and "3/3" in bar) == shown, bar
    # a start-up line: every process but a torchrun rank other than 0 says it (TQDM_DISABLE is about bars only)
    assert said == ("" if env.get("RANK") == "1" else "a start-up line\n")


def test_a_bar_the_caller_turns_off_stays_off(monkeypatch):
    assert drawn(monkeypatch, {**ONE, "TQDM_DISABLE": None}, enabled=False)[0] == ""


def test_other_libraries_bars_follow_the_same_rule(monkeypatch):
    """quiet_other_bars: where the toolkit's bars are off, the Hugging Face hub's download bars too (they pass
    tqdm a disable of their own, so TQDM_DISABLE alone leaves them on); and on a rank but 0, TQDM_DISABLE is set
    for every later tqdm import. Where bars are on, nothing is touched."""
    import huggingface_hub.utils as hub

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hub.enable_progress_bars()
    try:
        for env, off in (
            ({**ONE, "TQDM_DISABLE": None}, False),
            ({**ONE, "TQDM_DISABLE": "1"}, True),
            ({"WORLD_SIZE": "2", "RANK": "1", "TQDM_DISABLE": None}, True),
        ):
            hub.enable_progress_bars()
            drawn(monkeypatch, env)
            p.quiet_other_bars()
            assert hub.are_progress_bars_disabled() == off, env
        import os

        assert os.environ["TQDM_DISABLE"] == "1"  # the last one: rank 1
    finally:
        hub.enable_progress_bars()


def test_loading_a_model_keeps_the_hub_download_bars_as_they_were():
    """models/classifier.quiet_hf turns transformers' own bar (the weights being loaded) off while a model loads,
    not the hub's download bars (the bytes of a model fetched by name); afterwards every bar is as it was: off stays
    off (fine_tune/progress.quiet_other_bars), on stays on."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    from fine_tune.models.classifier import quiet_hf

    try:
        for before in (True, False):
            (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
            with quiet_hf():
                assert not hf_logging.is_progress_bar_enabled()
                assert hub.are_progress_bars_disabled() == (not before)
            assert hub.are_progress_bars_disabled() == (not before)
            assert hf_logging.is_progress_bar_enabled() == before
    finally:
        hf_logging.enable_progress_bar()
