"""BatchThreads: a model stage's batches on several threads, results back in order."""

import threading
import time

import pytest

from polycap.transforms.batch_threads import BatchThreads


class _Overlap:
    """A run that records how many batches compute at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self.now = self.most = 0
        self.threads = set()

    def __call__(self, batch):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.get_ident())
        time.sleep(0.02)
        with self._lock:
            self.now -= 1
        return [row * 10 for row in batch]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_come_back_in_order_with_at_most_threads_at_once(threads):
    run = _Overlap()
    batches = BatchThreads(run, threads)
    out = []
    for n in range(7):
        out += list(batches.submit([n, n + 100]))
    out += list(batches.drain())
    batches.close()
    assert out == [([n, n + 100], [n * 10, (n + 100) * 10]) for n in range(7)]
    assert run.most == threads
    if threads == 1:  # on the caller's own thread
        assert run.threads == {threading.get_ident()}


def test_a_batch_waits_in_submit_only_once_every_thread_is_busy():
    batches = BatchThreads(lambda batch: batch, 2)
    assert list(batches.submit([1])) == []
    assert list(batches.submit([2])) == []
    assert list(batches.submit([3])) == [([1], [1])]
    assert list(batches.drain()) == [([2], [2]), ([3], [3])]
    batches.close()


def test_discard_forgets_the_batches_of_a_failed_bundle():
    batches = BatchThreads(lambda batch: batch, 2)
    list(batches.submit(["from the failed bundle"]))
    batches.discard()
    assert list(batches.submit(["next bundle"])) == []
    assert list(batches.drain()) == [(["next bundle"], ["next bundle"])]
    batches.close()


def test_an_exception_of_run_reaches_the_caller():
    def run(batch):
        raise RuntimeError(f"bad batch {batch}")

    batches = BatchThreads(run, 2)
    list(batches.submit([1]))
    with pytest.raises(RuntimeError, match=r"bad batch \[1\]"):
        list(batches.drain())
    batches.close()


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be at least 1"):
        BatchThreads(lambda batch: batch, 0)
