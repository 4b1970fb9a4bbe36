"""Per-sample claims in MongoDB, so that concurrent runs on one field never track a sample twice.

A claim is a document in the ``pointtrack_claims`` collection of FiftyOne's database, keyed by
(dataset, label field, sample). A run takes it with an atomic insert-or-update that succeeds
only if the claim is free: absent, expired, already this run's, or held by a process of this
host that no longer exists (a killed run, so that a rerun resumes at once). While a run is
alive a heartbeat thread pushes its claims' expiry forward; a finished sample's claim is
deleted. Claims live outside the dataset, so they never show in its schema or the App.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid

import fiftyone.core.odm as foo
import psutil
from pymongo.errors import DuplicateKeyError

COLLECTION = "pointtrack_claims"
TTL = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # MongoDB stores naive UTC


class Claims:
    """The claims one run holds on ``(dataset_id, label_field)``; picklable (the database
    connection is FiftyOne's, per process)."""

    def __init__(self, dataset_id: str, label_field: str, run_id: str | None = None) -> None:
        self.prefix = f"{dataset_id}:{label_field}:"
        self.run_id = run_id or uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()

    @staticmethod
    def _collection():
        return foo.get_db_conn()[COLLECTION]

    def take(self, sample_id: str) -> bool:
        """Claim ``sample_id`` for this run; False if another live run holds it."""
        coll = self._collection()
        key = self.prefix + sample_id
        now = _now()
        mine = {"run": self.run_id, "host": self.host, "pid": self.pid, "expires": now + TTL}
        try:
            coll.update_one(
                {"_id": key, "$or": [{"expires": {"$lt": now}}, {"run": self.run_id}]},
                {"$set": mine},
                upsert=True,
            )
            return True
        except DuplicateKeyError:  # claimed, unexpired, by another run
            pass
        held = coll.find_one({"_id": key})
        if held is None:  # released meanwhile
            return self.take(sample_id)
        if held.get("host") == self.host and not _alive(held.get("pid")):
            # A run of this host that died: take over, if nobody else did first.
            taken = coll.update_one({"_id": key, "run": held["run"]}, {"$set": mine})
            return taken.modified_count == 1
        return False

    def release(self, sample_id: str) -> None:
        self._collection().delete_one({"_id": self.prefix + sample_id, "run": self.run_id})

    def refresh(self) -> None:
        self._collection().update_many(
            {"run": self.run_id}, {"$set": {"expires": _now() + TTL}}
        )

    def release_all(self) -> None:
        self._collection().delete_many({"run": self.run_id})


def _alive(pid) -> bool:
    try:
        return pid is not None and psutil.pid_exists(int(pid)) and psutil.Process(
            int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Heartbeat:
    """Refreshes a run's claims every ``TTL / 5`` while the ``with`` block runs, and releases
    whatever is left at the end."""

    def __init__(self, claims: Claims) -> None:
        self.claims = claims
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="pointtrack-claims", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(TTL.total_seconds() / 5):
            try:
                self.claims.refresh()
            except Exception:  # noqa: BLE001 -- a missed beat only shortens the claims' life
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.claims.release_all()
        except Exception:  # noqa: BLE001 -- the database may be the reason we are leaving
            pass
