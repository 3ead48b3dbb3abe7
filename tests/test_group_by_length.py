"""--group_by_length: the length-grouped micro-batch stream (fine_tune/batching.py) and the flag end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fine_tune.batching import LengthGroupedMicroBatchStream, MicroBatchStream, make_stream


def random_lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(8, 129, size=n)


def take(stream, k: int) -> list[np.ndarray]:
    return [stream.next() for _ in range(k)]


def test_every_row_once_per_epoch():
    n, mb = 1003, 8  # 126 micro-batches a epoch, the last one 3 rows; 3 mega-batches, the last one short
    lengths = random_lengths(n)
    s = make_stream(n, mb, seed=5, lengths=lengths)
    assert isinstance(s, LengthGroupedMicroBatchStream)
    per_epoch = -(-n // mb)
    for epoch in range(4):
        batches = take(s, per_epoch)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(n)), epoch
        sizes = [len(b) for b in batches]
        assert sizes.count(mb) == per_epoch - 1 and sizes.count(n % mb) == 1
        assert s.epoch == epoch + 1
    # the short micro-batch does not always sit at the end of the epoch (micro-batch order is shuffled)
    s = make_stream(n, mb, seed=5, lengths=lengths)
    short_at = [[len(b) for b in take(s, per_epoch)].index(n % mb) for _ in range(4)]
    assert any(i != per_epoch - 1 for i in short_at)


def padded_tokens(batches: list[np.ndarray], lengths: np.ndarray) -> int:
    return int(sum(lengths[b].max() * len(b) for b in batches))


def test_micro_batches_are_length_homogeneous():
    n, mb = 4000, 16
    lengths = random_lengths(n, seed=1)
    per_epoch = -(-n // mb)
    plain = padded_tokens(take(MicroBatchStream(n, mb, seed=0), per_epoch), lengths)
    grouped = padded_tokens(take(make_stream(n, mb, seed=0, lengths=lengths), per_epoch), lengths)
    real = int(lengths.sum())
    # uniform lengths in [8, 128]: a random batch of 16 pads to ~121 tokens a row, a sorted one to ~its own length
    assert plain / real > 1.7
    assert grouped / real < 1.05
    assert grouped / plain < 0.6
    # the long micro-batches are spread over the epoch, not all first
    s = make_stream(n, mb, seed=0, lengths=lengths)
    maxima = np.array([lengths[b].max() for b in take(s, per_epoch)])
    first, second = maxima[: per_epoch // 2].mean(), maxima[per_epoch // 2 :].mean()
    assert abs(first - second) < 10


def test_deterministic_per_seed_and_different_across_seeds():
    n, mb = 250, 6
    lengths = random_lengths(n)
    a = take(make_stream(n, mb, seed=3, lengths=lengths), 130)
    b = take(make_stream(n, mb, seed=3, lengths=lengths), 130)
    c = take(make_stream(n, mb, seed=4, lengths=lengths), 130)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # and the epochs differ from each other
    per_epoch = -(-n // mb)
    assert not all(np.array_equal(x, y) for x, y in zip(a[:per_epoch], a[per_epoch : 2 * per_epoch]))


@pytest.mark.parametrize("k", [0, 1, 41, 42, 43, 100])  # 42 micro-batches an epoch: around the boundaries
def test_restart_at_position(k):
    n, mb = 250, 6
    lengths = random_lengths(n)
    fresh = make_stream(n, mb, seed=7, lengths=lengths)
    expected = take(fresh, k + 50)[k:]
    resumed = make_stream(n, mb, seed=7, lengths=lengths)
    resumed.position = k  # what Trainer does on resume
    assert all(np.array_equal(x, y) for x, y in zip(take(resumed, 50), expected))
    direct = LengthGroupedMicroBatchStream(n, mb, 7, lengths, position=k)
    assert all(np.array_equal(x, y) for x, y in zip(take(direct, 50), expected))
    assert direct.position == resumed.position == k + 50


def test_default_order_unchanged():
    n, mb = 101, 4
    a, b = make_stream(n, mb, seed=42), MicroBatchStream(n, mb, seed=42)
    assert type(a) is MicroBatchStream
    assert all(np.array_equal(x, y) for x, y in zip(take(a, 80), take(b, 80)))


def test_lengths_must_match_rows():
    with pytest.raises(ValueError):
        make_stream(10, 4, seed=0, lengths=np.ones(9, dtype=np.int64))


def test_flag_is_a_config_field():
    from fine_tune.cli import parse_flags
    from fine_tune.config import changed_fields
    from fine_tune.settings import BatchingFlags

    assert parse_flags("x", "", [BatchingFlags], []).batching.group_by_length is False
    flags = parse_flags("x", "", [BatchingFlags], ["--group_by_length"])
    assert flags.batching.group_by_length is True and flags.record()["group_by_length"] is True
    assert changed_fields({"group_by_length": False}, {"group_by_length": True}) == ["group_by_length"]
    assert changed_fields({}, {"group_by_length": False}) == []  # configs from before the flag


def test_fine_tune_with_group_by_length(run, tiny_bert, exp_root):
    out = run(
        "run_fine_tune.py",
        "--experiment",
        "gbl",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "8",
        "--accum_step",
        "2",
        "--max_seq_len",
        "32",
        "--group_by_length",
    )
    exp = exp_root / "gbl_bert_boolq"
    assert json.loads((exp / "config.json").read_text())["group_by_length"] is True
    assert (exp / "model-4.pt").is_file(), out.stderr
    # the flag reached the engine: the same run in the original order ends elsewhere
    run(
        "run_fine_tune.py",
        "--experiment",
        "plain",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "8",
        "--accum_step",
        "2",
        "--max_seq_len",
        "32",
        "--dropout",
        "0",
    )
    run(
        "run_fine_tune.py",
        "--experiment",
        "gbl0",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "8",
        "--accum_step",
        "2",
        "--max_seq_len",
        "32",
        "--dropout",
        "0",
        "--group_by_length",
    )
    a = torch.load(exp_root / "plain_bert_boolq" / "model-4.pt", weights_only=True)
    b = torch.load(exp_root / "gbl0_bert_boolq" / "model-4.pt", weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # the same experiment without the flag is another config: refused, not resumed
    refused = run(
        "run_fine_tune.py",
        "--experiment",
        "gbl",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "8",
        "--accum_step",
        "2",
        "--max_seq_len",
        "32",
        check=False,
    )
    assert refused.returncode == 2 and "group_by_length" in refused.stderr


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The documented seeding of an epoch's shuffle: ``seed * 1_000_003 + epoch``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def test_plain_stream_is_the_documented_seeded_shuffle():
    """MicroBatchStream: epoch e is torch.randperm(n) seeded with seed * 1_000_003 + e, cut into micro-batches in
    order, the last one short (drop_last=False); epochs follow each other and a restart continues anywhere."""
    n, mb, seed = 23, 5, 9  # 5 micro-batches an epoch, the last of 3 rows
    expected = []
    for epoch in range(3):
        perm = torch.randperm(n, generator=epoch_generator(seed, epoch)).numpy()
        expected += [perm[i : i + mb] for i in range(0, n, mb)]
    s = MicroBatchStream(n, mb, seed)
    got = take(s, 15)
    assert [len(b) for b in got] == [5, 5, 5, 5, 3] * 3
    assert all(np.array_equal(a, b) for a, b in zip(got, expected)) and s.epoch == 3
    resumed = MicroBatchStream(n, mb, seed, position=7)
    assert all(np.array_equal(a, b) for a, b in zip(take(resumed, 8), expected[7:]))


def reference_grouped_epoch(n: int, mb: int, seed: int, epoch: int, lengths: np.ndarray) -> list[list[int]]:
    """LengthGroupedMicroBatchStream's epoch written out from its docstring, in plain Python."""
    g = epoch_generator(seed, epoch)
    perm = torch.randperm(n, generator=g).tolist()
    mega = 50 * mb
    batches = []
    for start in range(0, n, mega):
        chunk = perm[start : start + mega]
        chunk = sorted(chunk, key=lambda r: -int(lengths[r]))  # Python's sort is stable: ties keep shuffled order
        batches += [chunk[i : i + mb] for i in range(0, len(chunk), mb)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[j] for j in order]


def test_grouped_stream_is_the_documented_algorithm():
    """Three mega-batches (50 micro-batches of 4, the last mega-batch 13 rows), lengths with many ties (1..6), a
    seed away from the default: two epochs equal the docstring's steps written out independently; the one short
    micro-batch holds the shortest rows of the last mega-batch."""
    n, mb, seed = 413, 4, 13
    lengths = np.random.default_rng(3).integers(1, 7, size=n)
    s = make_stream(n, mb, seed, lengths=lengths)
    per_epoch = -(-n // mb)
    for epoch in range(2):
        got = [b.tolist() for b in take(s, per_epoch)]
        expected = reference_grouped_epoch(n, mb, seed, epoch, lengths)
        assert got == expected, epoch
        short = [b for b in got if len(b) != mb]
        last_mega = torch.randperm(n, generator=epoch_generator(seed, epoch)).numpy()[400:]
        assert len(short) == 1 and len(short[0]) == n % mb
        assert sorted(lengths[short[0]].tolist()) == sorted(lengths[last_mega].tolist())[: n % mb]
