"""The CI metric check: quality metrics may not move beyond the tolerance; timings are ignored."""

from nmt.regression import metric_moves


def diff(**changes):
    return {"metrics/eval.json": {k: {"old": o, "new": n, "diff": n - o} for k, (o, n) in changes.items()}}


def test_small_moves_pass_and_large_moves_fail():
    assert metric_moves(diff(bleu=(20.0, 20.5)), 1.0) == ([], 1)
    problems, compared = metric_moves(diff(bleu=(20.0, 22.0), exact_match=(5.0, 5.0)), 1.0)
    assert compared == 2 and len(problems) == 1 and "bleu moved from 20.0 to 22.0" in problems[0]


def test_timings_are_not_compared():
    assert metric_moves({"metrics/train.json": {"train_seconds": {"old": 100, "new": 300}}}, 1.0) == ([], 0)


def test_a_vanished_metric_is_a_problem():
    problems, _ = metric_moves({"metrics/eval.json": {"bleu": {"old": 20.0, "new": None}}}, 1.0)
    assert problems and "gone" in problems[0]
