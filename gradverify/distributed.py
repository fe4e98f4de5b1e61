"""Work items on a Ray cluster, results merged as they arrive, kept in a resumable journal.

:func:`run_items` is the one mechanism of both the fuzz campaign and the
audit (each a list of independent items): items already in the
:class:`Journal` are not run again, the others run on Ray (``address``
``"local"`` starts a local Ray with ``workers`` CPUs; any other address joins
that cluster, whose nodes need gradverify installed), on ``workers`` local
processes or in this process, and every result is appended to the journal
the moment it arrives.  A run killed at any point is resumed
by running it again with the same journal.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

RAY_MISSING = "Ray is not installed: pip install -c constraints.txt 'gradverify[ray]'"


def ray_installed() -> bool:
    """Whether Ray can be imported (without importing it: that takes seconds)."""
    from importlib.util import find_spec

    return find_spec("ray") is not None


class Journal:
    """An append-only JSON-lines file: a header naming the run, then one ``{"key", "result"}`` line per item.

    Each line is flushed and synced as it is written, so a killed run loses
    at most the line being written (a torn last line is ignored on loading).
    Opening the journal of a different run (another header) is a ValueError.
    With ``header=None`` the keys name their items whatever the run, so the
    file has no header line and the journals of shards can be concatenated.
    """

    def __init__(self, path, header: Optional[dict]):
        self.path = Path(path)
        self.header = header
        self.results = {}
        if self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
            if header is not None:
                self._append({"journal": header})

    def _load(self):
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        if self.header is not None:
            try:
                found = json.loads(lines[0]).get("journal")
            except json.JSONDecodeError:
                found = None
            if found != self.header:
                raise ValueError(f"journal: {self.path} records another run ({found}), expected {self.header}")
        for line in lines[0 if self.header is None else 1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run
            if not isinstance(entry, dict) or not {"key", "result"} <= entry.keys():
                raise ValueError(f"journal: {self.path} holds a line that is not a {{key, result}} record: "
                                 f"{line[:80]}")
            self.results[_key(entry["key"])] = entry["result"]
        if lines[-1]:  # a torn line: end it so the next record starts on a line of its own
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("\n")

    def _append(self, entry):
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record(self, key, result):
        """Keep ``result`` (JSON-serialisable) of item ``key`` (an int or a string)."""
        self._append({"key": key, "result": result})
        self.results[_key(key)] = result


def _key(key):
    return tuple(key) if isinstance(key, list) else key


class RayPool:
    """``workers`` Ray actors, each set up once (``setup()``: imports, warm-up), that map a function over items.

    A context manager: entering connects to Ray at ``address`` (``"local"``
    starts a local Ray with ``workers`` CPUs) and waits until every actor
    is set up; leaving disconnects (and stops a local Ray).  ``function``
    and ``setup`` are pickled to the workers: module-level functions or
    ``functools.partial`` of them.  ``workers`` defaults to the cluster's CPUs.
    """

    def __init__(self, address: str, workers: Optional[int] = None, setup: Optional[Callable] = None):
        self.address, self.workers, self.setup = address, workers, setup
        self.actors = []

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise RuntimeError(RAY_MISSING) from None
        self.ray = ray
        if self.address == "local":
            ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=self.address, log_to_driver=False)
        try:
            count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            setup = self.setup

            @ray.remote(num_cpus=1)
            class Worker:
                def __init__(self):
                    if setup is not None:
                        setup()

                def ready(self):
                    return True

                def run(self, function, batch):
                    return [(key, function(payload)) for key, payload in batch]

            self.actors = [Worker.remote() for _ in range(count)]
            ray.get([actor.ready.remote() for actor in self.actors])
        except BaseException:
            ray.shutdown()
            raise
        return self

    def __exit__(self, *exc):
        self.ray.shutdown()
        return False

    def map(self, function: Callable, items: Iterable, batch_size: int = 1) -> Iterator:
        """``(key, function(payload))`` for each ``(key, payload)`` of ``items``, in the order they finish."""
        ray = self.ray
        items = list(items)
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        pending, idle = {}, list(self.actors)
        while batches or pending:
            while idle and batches:
                actor = idle.pop()
                pending[actor.run.remote(function, batches.pop(0))] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            idle.append(pending.pop(done[0]))
            yield from ray.get(done[0])


class ProcessPool:
    """``workers`` fresh processes (spawned), each set up once by ``setup()``, that map a function over items.

    A context manager: entering waits until every process is set up;
    leaving shuts them down.  ``function`` and ``setup`` are pickled to
    the processes, as for :class:`RayPool`.
    """

    def __init__(self, workers: int, setup: Optional[Callable] = None):
        self.workers, self.setup = workers, setup

    def __enter__(self):
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_set_up_worker, initargs=(self.setup,))
        ready = set()
        while len(ready) < self.workers:
            ready.update(self.pool.map(_worker_pid, range(self.workers)))
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(cancel_futures=True)
        return False

    def map(self, function: Callable, items: Iterable) -> Iterator:
        """``(key, function(payload))`` for each ``(key, payload)`` of ``items``, in the order they finish."""
        futures = {self.pool.submit(function, payload): key for key, payload in items}
        return ((futures[done], done.result()) for done in as_completed(futures))


def _set_up_worker(setup):
    # A worker holds both ends of the executor's queues, so it never sees EOF when its parent is killed (kill -9):
    # without this watch it would wait on the queue forever, holding its memory.
    parent = multiprocessing.parent_process()
    threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    if setup is not None:
        setup()


def _exit_with(sentinel):
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _worker_pid(_task):
    time.sleep(0.05)  # long enough for another idle worker to take the next task
    return os.getpid()


def run_items(function: Callable, items: dict, address: Optional[str] = None, journal: Optional[Journal] = None,
              workers: Optional[int] = None, setup: Optional[Callable] = None,
              on_result: Optional[Callable] = None, on_start: Optional[Callable] = None) -> dict:
    """``{key: function(payload)}`` for ``items`` (``{key: payload}``), skipping the keys ``journal`` holds.

    Runs on Ray at ``address`` (see :class:`RayPool`), else on ``workers``
    processes (:class:`ProcessPool`) when there are more than one, else in
    this process; ``on_start()`` is called once the workers are set up (when anything is
    left to run); each new result is recorded in ``journal`` and passed to
    ``on_result(key, result)`` as it arrives.  Results must be
    JSON-serialisable when a journal is kept.
    """
    results = dict(journal.results) if journal is not None else {}
    todo = [(key, payload) for key, payload in items.items() if key not in results]
    if not todo:
        return results
    with contextlib.ExitStack() as stack:
        if address is not None:
            arriving = stack.enter_context(RayPool(address, workers, setup)).map(function, todo)
        elif workers is not None and workers > 1:
            arriving = stack.enter_context(ProcessPool(workers, setup)).map(function, todo)
        else:
            if setup is not None:
                setup()
            arriving = ((key, function(payload)) for key, payload in todo)
        if on_start is not None:
            on_start()
        for key, result in arriving:
            results[key] = result
            if journal is not None:
                journal.record(key, result)
            if on_result is not None:
                on_result(key, result)
    return results
