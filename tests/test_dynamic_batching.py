"""DynamicBatcher: requests queued behind a running batch share the next one, each gets its own
results, a failure stays with the request that caused it, and batches never overlap."""

from __future__ import annotations

import threading
import time

import pytest

from radiodiff.dynamic_batching import DynamicBatcher


class Recorder:
    """A batch function that squares numbers, records each batch, and can be held at its start."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.active = 0
        self.overlapped = False

    def __call__(self, items: list[int]) -> list[int]:
        self.active += 1
        self.overlapped |= self.active > 1
        self.entered.set()
        self.hold.wait(timeout=10)
        self.batches.append(list(items))
        self.active -= 1
        if any(item < 0 for item in items):
            raise ValueError(f"negative item in {items}")
        return [item * item for item in items]


def _submit_in_threads(batcher: DynamicBatcher, requests: list[list[int]]) -> tuple[list, list[threading.Thread]]:
    answers: list = [None] * len(requests)

    def ask(i: int) -> None:
        try:
            answers[i] = batcher.submit(requests[i])
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            answers[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    return answers, threads


def _wait_queued(batcher: DynamicBatcher, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(batcher._queue) < count:
        assert time.monotonic() < deadline, "requests did not queue"
        time.sleep(0.005)


def _behind_a_held_batch(batcher: DynamicBatcher, recorder: Recorder, first: list[int],
                         rest: list[list[int]]) -> tuple[list, list]:
    """Submit `first` and hold its batch; queue `rest` behind it; release; the answers of both."""
    recorder.hold.clear()
    first_answer, first_threads = _submit_in_threads(batcher, [first])
    assert recorder.entered.wait(timeout=10)
    answers, threads = _submit_in_threads(batcher, rest)
    _wait_queued(batcher, len(rest))
    recorder.hold.set()
    for thread in first_threads + threads:
        thread.join(timeout=10)
    return first_answer, answers


def test_a_lone_request_runs_at_once_with_its_own_results():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_items=8)
    assert batcher.submit([1, 2, 3]) == [1, 4, 9]
    assert batcher.submit([]) == []
    assert recorder.batches == [[1, 2, 3]] and batcher.batches == 1 and batcher.requests == 1


def test_requests_queued_behind_a_batch_share_the_next_one_in_order():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_items=8)
    rest = [[2, 3], [4], [5, 6, 7]]
    first, answers = _behind_a_held_batch(batcher, recorder, [1], rest)
    assert first == [[1]]
    assert sorted(answers) == sorted([[4, 9], [16], [25, 36, 49]])
    for request, answer in zip(rest, answers):
        assert answer == [item * item for item in request]
    assert len(recorder.batches) == 2 and sorted(recorder.batches[1]) == [2, 3, 4, 5, 6, 7]
    assert batcher.batches == 2 and batcher.requests == 4 and not recorder.overlapped


def test_a_batch_holds_at_most_max_items_but_a_larger_request_still_runs():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_items=3)
    _, answers = _behind_a_held_batch(batcher, recorder, [0], [[1, 2], [3, 4], [5, 6, 7, 8]])
    assert all(len(batch) <= 3 for batch in recorder.batches[1:-1])
    assert [5, 6, 7, 8] in recorder.batches  # alone, over the limit
    assert answers[2] == [25, 36, 49, 64] and not recorder.overlapped


def test_a_failing_request_fails_alone():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_items=8)
    _, answers = _behind_a_held_batch(batcher, recorder, [1], [[2], [-3], [4]])
    by_request = dict(zip((2, -3, 4), answers))
    assert by_request[2] == [4] and by_request[4] == [16]
    assert isinstance(by_request[-3], ValueError)
    with pytest.raises(ValueError, match="negative"):
        batcher.submit([-1])
    assert batcher.submit([5]) == [25]  # and it keeps serving


def test_a_batch_function_returning_the_wrong_count_is_an_error():
    batcher = DynamicBatcher(lambda items: items[:-1], max_items=4)
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        batcher.submit([1, 2])


def test_max_items_must_be_positive():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: items, max_items=0)
