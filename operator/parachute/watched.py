"""The newest copy of each Rollout, and of each Deployment a Rollout works with, as the watches
and the API server's answers showed them: a reconcile reads these instead of asking again.

At 1,000 Rollouts the reads of the Rollout, its target and its canary were three of the seven
requests of a reconcile, and building the client's models from their answers a tenth of the
operator's time. The watches already bring every change, so the copies cost no request.

Why a copy is safe to decide on:
- The Rollout's status write carries the resourceVersion it was read at: a copy older than the
  Rollout gets a 409, nothing is acted on, and the copy is not trusted again until a read.
- A copy is replaced only by a newer one (resourceVersions compared as the numbers etcd gives;
  one that is not a number is not trusted). The answer to this process's own write is stored
  as it comes, so a reconcile always sees its own last write, never the watch's older event.
- A copy is kept at most `keep` seconds after it was last confirmed: an object whose deletion
  the watch missed (a watch that restarts lists what exists, and says nothing of what went
  meanwhile) is read again, and found gone. What confirms a copy: the watch showing its
  version, an answer of the API server, or a listing of the kind's names and versions
  (`confirm`), which the leader asks for every `CONFIRM_EVERY` seconds. Without the listings a
  copy nothing changed for `keep` was read again at its next look: at 10,000 Rollouts, whose
  releases' looks came minutes apart and whose targets stood paused for half an hour, 0.5 reads
  of a Deployment and 0.2 of a Rollout a reconcile. What a copy of a deleted object can mislead
  while it is kept is bounded: the Rollout's status write is guarded by its resourceVersion,
  and a write to a deleted Deployment is answered 404, which drops the copy.
- The watch may lag: a copy can be a moment behind the API server, as any watch cache is.
  Every change it missed is on its way as an event, and that event wakes the Rollout again
  (unless it is no news: `News`; a decision that holds for a status the controller has not
  caught up with looks again on its own).
- An object known not to exist (a read answered 404, or the watch showed its deletion) is kept
  as absent on the same terms: until the watch shows it again, or for `keep` seconds. Without
  it, every look of a Rollout without a canary read the canary to be told so: a third of the
  requests of a Rollout at rest. A creation the watch has not shown yet is the watch's lag
  again; a create it leads to is refused as already there. A listing confirms only the
  absences asked about within `keep`: the others (names deleted and never asked for again)
  still expire, and are swept.

Copies are kept as JSON text, so that each read gets dicts of its own to change.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from parachute.plan.desired_workload import as_news

Body = dict[str, Any]
Key = tuple[str, str]  # namespace, name
Mark = tuple[str, int] | tuple[str, int | None, float]  # a copy's version, or an absence

KEEP = 600.0  # seconds a copy is trusted without a sign of life from the watch, a read or a listing
CONFIRM_EVERY = KEEP / 3  # seconds between two listings that confirm the copies (one may fail)
SWEEP = 1000  # absences recorded between two sweeps of those kept too long (never asked again)


def version(body: Mapping[str, Any]) -> int | None:
    """The resourceVersion as a number, or None when there is none or it is not one."""
    return number((body.get("metadata") or {}).get("resourceVersion"))


def number(resource_version: Any) -> int | None:
    """A resourceVersion as etcd's number, or None when it is not one."""
    try:
        return int(resource_version) if resource_version is not None else None
    except (TypeError, ValueError):
        return None


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


@dataclass(frozen=True)
class _Copy:
    version: int
    text: str
    confirmed: float  # monotonic seconds: when the watch, an answer or a listing last vouched for it
    shown: float  # when the watch or an answer last showed this version (a listing only vouches)


@dataclass(frozen=True)
class _Absence:
    version: int | None  # the deletion's resourceVersion; None: a read's 404, as new as anything then
    confirmed: float
    recorded: float  # when it was recorded: two 404s are two marks, a listing confirming one is not
    asked: float  # when a look last asked whether it exists: a listing confirms only those asked


def _within(key: Key, namespace: str | None) -> bool:
    return namespace is None or key[0] == namespace


def _absence(number: int | None, now: float) -> _Absence:
    return _Absence(number, now, now, now)


Held = TypeVar("Held", _Copy, _Absence)


class Copies:
    """The newest copy of each object of one kind."""

    def __init__(self, keep: float = KEEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep, self.clock = keep, clock
        self._copies: dict[Key, _Copy] = {}
        # Keys whose copy proved stale (a 409): the watch's events are not trusted for them
        # until the API server's own answer comes (an older event may still be on its way).
        self._doubted: set[Key] = set()
        # After `distrust`: only keys the API server answered for since are kept from the watch.
        self._answered_since: set[Key] | None = None
        self._absent: dict[Key, _Absence] = {}
        self._recorded = 0  # absences recorded since the last sweep

    def __len__(self) -> int:
        return len(self._copies)

    def seen(self, body: Mapping[str, Any]) -> None:
        """A watch event's object."""
        key = _key(body)
        absence = self._absent.get(key)
        if absence is not None:
            number = version(body)
            if absence.version is not None and number is not None and number <= absence.version:
                return  # from before its deletion
            del self._absent[key]  # there again, or maybe (a 404 cannot be ordered with an event)
        if self._untrusted(key):
            return
        self._put(key, body)

    def deleted(self, body: Mapping[str, Any]) -> None:
        """A watch event of the object's deletion: absent from then on, unless an answer
        already showed it made again."""
        key, number = _key(body), version(body)
        kept = self._copies.get(key)
        if kept is not None and number is not None and kept.version > number:
            return
        trusted = number is not None and not self._untrusted(key)
        self.gone(*key)
        if trusted:
            self._record_absent(key, _absence(number, self.clock()))

    def _untrusted(self, key: Key) -> bool:
        """The watch's word is not taken for `key` until the API server has answered for it."""
        return key in self._doubted or (self._answered_since is not None and key not in self._answered_since)

    def answered(self, body: Mapping[str, Any]) -> None:
        """The API server's answer to a read or a write: as new as anything the watch can show."""
        key = _key(body)
        self._absent.pop(key, None)
        self._doubted.discard(key)
        if self._answered_since is not None:
            self._answered_since.add(key)
        self._put(key, body)

    def distrust(self) -> None:
        """Forget every copy, and take none from the watch until the API server has answered
        for that object: a replica that has just become the leader may have a watch behind
        what the last leader wrote, and a reconcile whose status does not change acts on what
        it read without a guarded write."""
        self._copies.clear()
        self._doubted.clear()
        self._absent.clear()
        self._answered_since = set()

    def answered_absent(self, namespace: str, name: str, asked_at: float) -> None:
        """A read asked at `asked_at` (this clock's) was answered 404: the object did not exist
        then. A copy the watch showed since is newer (made while the answer was on its way)."""
        key = (namespace, name)
        kept = self._copies.get(key)
        if kept is not None and kept.shown > asked_at:
            return
        self.gone(namespace, name)
        if self._answered_since is not None:
            self._answered_since.add(key)
        self._record_absent(key, _absence(None, self.clock()))

    def _record_absent(self, key: Key, absence: _Absence) -> None:
        self._absent[key] = absence
        self._recorded += 1
        if self._recorded >= SWEEP:  # an absence nobody asks about again is not kept for ever
            self._recorded = 0
            self._absent = {k: a for k, a in self._absent.items() if not self._stale(a)}

    def confirm(
        self, listed: Mapping[Key, int], at: int, asked_at: float, namespace: str | None = None
    ) -> int:
        """A listing of every object of the kind (in `namespace`; all when None), a snapshot at
        resourceVersion `at` asked for at `asked_at` (this clock's): copies of the versions it
        lists are confirmed, and so are absences of what it does not list; a copy it should
        list but does not is of an object deleted since (the watch missed it, or its event is
        on its way), and is dropped. A copy newer than the snapshot is not its to judge, and
        one older than the version listed waits for its event, confirmed by nothing. Returns
        how many copies it dropped."""
        dropped = 0
        for key, copy in list(self._copies.items()):
            if not _within(key, namespace) or copy.version > at:
                continue
            shown = listed.get(key)
            if shown is None:
                self.gone(*key)
                self._record_absent(key, _absence(at, self.clock()))
                dropped += 1
            elif shown == copy.version and copy.confirmed < asked_at:
                self._copies[key] = _Copy(copy.version, copy.text, asked_at, copy.shown)
        for key, absence in list(self._absent.items()):
            older = absence.version is None or absence.version <= at
            asked = asked_at - absence.asked <= self.keep
            if (
                _within(key, namespace)
                and key not in listed
                and older
                and asked
                and absence.confirmed < asked_at
            ):
                self._absent[key] = replace(absence, confirmed=asked_at)
        return dropped

    def gone(self, namespace: str, name: str) -> None:
        """The object was deleted, or is no longer of interest: nothing is known of it."""
        self._copies.pop((namespace, name), None)
        self._absent.pop((namespace, name), None)
        self._doubted.discard((namespace, name))

    def doubt(self, namespace: str, name: str) -> None:
        """The copy is older than the object (a write based on it was refused): read it again."""
        self._copies.pop((namespace, name), None)
        self._absent.pop((namespace, name), None)
        self._doubted.add((namespace, name))

    @property
    def absences(self) -> int:
        """How many absences are held (expired ones included until a sweep)."""
        return len(self._absent)

    def known_absent(self, namespace: str, name: str) -> bool:
        """True when the object is known not to exist (`get` is then None too, with no need to ask)."""
        return self._asked_absent((namespace, name)) is not None

    def mark(self, namespace: str, name: str) -> Mark | None:
        """What is known of the object, as a value that changes whenever that does: the version
        of its copy, or its absence (`parachute.listings` keeps a listing while these stay);
        None when nothing is known."""
        return self._marked((namespace, name))[0]

    def marked(self, namespace: str, name: str) -> tuple[Mark | None, Body | None]:
        """The mark, and a fresh dict of the copy it marks (None when it marks none)."""
        mark, copy = self._marked((namespace, name))
        return mark, (json.loads(copy.text) if copy is not None else None)

    def _marked(self, key: Key) -> tuple[Mark | None, _Copy | None]:
        copy = self._fresh(self._copies, key)
        if copy is not None:
            return ("copy", copy.version), copy
        absence = self._asked_absent(key)
        if absence is not None:  # a 404 has no version: each one recorded is a mark of its own
            return ("absent", absence.version, absence.recorded), None
        return None, None

    def _asked_absent(self, key: Key) -> _Absence | None:
        """The absence held for `key`, noted as asked about now."""
        absence = self._fresh(self._absent, key)
        if absence is not None:
            absence = self._absent[key] = replace(absence, asked=self.clock())
        return absence

    def get(self, namespace: str, name: str) -> Body | None:
        """A fresh dict of the trusted copy, or None: then ask the API server."""
        found = self._fresh(self._copies, (namespace, name))
        if found is None:
            return None
        parsed: Body = json.loads(found.text)
        return parsed

    def _fresh(self, held: dict[Key, Held], key: Key) -> Held | None:
        """What is held for `key`, unless nothing confirmed it for longer than it is kept."""
        found = held.get(key)
        if found is not None and self._stale(found):
            del held[key]
            return None
        return found

    def _stale(self, held: _Copy | _Absence) -> bool:
        """Nothing confirmed it for longer than it is kept."""
        return self.clock() - held.confirmed > self.keep

    def _put(self, key: Key, body: Mapping[str, Any]) -> None:
        number = version(body)
        if number is None:  # not comparable: nothing newer can be told from older
            self._copies.pop(key, None)
            return
        kept = self._copies.get(key)
        if kept is not None and number < kept.version:
            return  # an older event than what an answer already showed
        if kept is not None and number == kept.version:
            now = self.clock()
            self._copies[key] = _Copy(number, kept.text, now, now)
            return
        now = self.clock()
        self._copies[key] = _Copy(number, json.dumps(without_managed_fields(body)), now, now)


def without_managed_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """managedFields are half of a Deployment's JSON, and nothing in Parachute reads them."""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping) or "managedFields" not in meta:
        return dict(body)
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def content(body: Mapping[str, Any]) -> str:
    """A digest of what an object says: all but what every write changes (its resourceVersion,
    managedFields, and its generation, which only counts changes of the spec)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items()
            if k not in ("resourceVersion", "generation", "managedFields")}  # fmt: skip
    text = json.dumps({**body, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class _Shown:
    version: int
    digest: str


def _news() -> bool:
    return True


class News:
    """Which watch events of an object tell this process something it did not know.

    Not the echo of its own write, and not an event that changes nothing Parachute reads (a
    Deployment's conditions, say): each woke a reconcile that decided nothing.

    A write is known only when its answer is exactly the copy it was made on with the change
    applied: a merge patch has no precondition, so an answer that shows more shows someone
    else's change too, and its echo stays news. The echo is the event of the answer's
    resourceVersion; it may arrive before the answer, so the question `event` returns is asked
    again when the reconcile that wrote has ended.
    """

    def __init__(self, read: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict) -> None:
        self._read = read  # the part of an object Parachute reads: a change elsewhere is no news
        self._shown: dict[Key, _Shown] = {}  # the newest version shown, by an event or a known write
        self._wrote: dict[Key, int] = {}  # the version this process's last known write made

    def event(self, body: Mapping[str, Any]) -> Callable[[], bool] | None:
        """None when the event shows nothing new; else whether it is still news, to ask once the
        reconcile under way (which may have written it) has ended."""
        key, number = _key(body), version(body)
        if number is None:  # cannot be ordered: always news
            self._shown.pop(key, None)
            return _news
        shown, digest = self._shown.get(key), content(self._read(body))
        if shown is not None and number <= shown.version:
            return None  # the echo of a write answered first, or older than it
        self._shown[key] = _Shown(number, digest)
        if shown is not None and digest == shown.digest:
            return None  # nothing Parachute reads changed
        return lambda: self._wrote.get(key) != number

    def wrote(self, answer: Mapping[str, Any], expected: Mapping[str, Any] | None) -> None:
        """This process's write was answered; `expected` is what the answer shows if nobody
        else changed the object since the copy the write was made on (None: not known)."""
        key, number = _key(answer), version(answer)
        if number is None or expected is None:
            return  # not known: its echo is news
        digest = content(self._read(answer))
        if content(self._read(expected)) != digest:
            return  # someone else's change may be in it: its echo is news
        self._wrote[key] = number
        shown = self._shown.get(key)
        if shown is None or shown.version < number:  # events after it may have come first
            self._shown[key] = _Shown(number, digest)

    def gone(self, namespace: str, name: str) -> None:
        self._shown.pop((namespace, name), None)
        self._wrote.pop((namespace, name), None)


ROLLOUTS = Copies()
DEPLOYMENTS = Copies()
DEPLOYMENT_NEWS = News(read=as_news)
