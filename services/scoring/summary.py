"""A compact, order-independent summary of one customer, folded event by event.

The scorer used to keep every customer's raw events (up to 1,000) and recompute the features
from the whole list on every batch, so cost and bytes grew with the history. A
:class:`Summary` is updated by :meth:`Summary.fold` one event at a time, holds a bounded
amount of state, and computes every feature in :data:`FEATURE_NAMES` itself:
:func:`services.scoring.features.compute_features` folds the activities at or before ``now``
into a fresh summary and reads :meth:`Summary.features` — there is one feature computation
for training, ``as_of`` reads and the stream (feature schema 3).

Days are the shop's days. An event's day is its calendar day at the UTC offset its
``occurred_at`` carries (``Activity.day``, :func:`~services.scoring.features.local_day`): a
visit at 18:45 in New York (-05:00) and its payment at 19:25 (00:25 UTC) are one active day,
where UTC days made them two and halved a weekly regular's cadence. A read at ``now`` counts its
windows back from ``now``'s day on the clock of the customer's newest event (the offset of the
newest event by time, the largest one among events at that instant: ``tz_minutes``). Events of
one customer at several offsets (summer time, an order placed abroad) each keep their own day;
the result is still a function of the set of events. Histories all at ``Z`` count UTC days,
as before.

What it keeps (N = the day of the newest event ever folded: the largest event day)
----------------------------------------------------------------------------------
- ``first_ts``/``last_ts`` and the newest visit, transaction, non-complaint activity and
  complaint, exact in ms (recency and tenure stay exact).
- Per-day buckets for the days ``d > N - DAILY_DAYS`` (91 days), per-week buckets (absolute
  weeks ``d // 7``) for older days while ``N - 7*week < RETAIN_DAYS`` (371, so every week that
  touches the 365-day window is kept); older buckets are dropped. A bucket holds: visits,
  positive-amount transactions (count, sum), zero/no-amount transactions, refunds (amount < 0:
  count, sum of the absolute amounts), events with a channel, online-channel events
  (``online``/``app``/``delivery``), complaint events, unresolved complaint events. Money is kept
  as integer thousandths (``round(amount * 1000)``) so sums are exact and order independent
  (float addition is not associative). Whether a day is daily or weekly depends only on N, and
  moving a day into its week is an addition, so folding and then re-bucketing commutes: the
  final content is a function of the SET of events, whatever the arrival order.
- Active days (a day with a visit, transaction or any other non-complaint event): a bitmap of
  the RETAIN_DAYS days back from N (exact active_days_30/90/365, and the active days of every
  retained week); the 13 newest active days ever (cadence uses the last 12 gaps) even when older
  than the bitmap; the first active day ever (BG/NBD "born inside the year" test).
- Complaints by reference (``complaint_ref`` or the event id): the ref's newest events (up to
  REF_EVENTS = 4, for point-in-time reads) as (ts, event id, status, severity), and the newest
  severity among the ones left out (the "falls back to the ref's previous severity" rule). Open
  refs are kept forever. Events of a ref that are older than RETAIN_DAYS before N and are not the
  ref's newest are folded into that fallback, so an old resolved ref shrinks to one entry.
  (It is not dropped entirely: a late, older "open" event of a dropped ref would re-open it, and
  the result would depend on arrival order. Complaint refs are few; the entry is ~60 bytes.)
- The RECENT_K = 8 newest raw events exactly (reasons, the cause event id, timelines,
  point-in-time recency).
- Id memory: a 64-bit blake2b hash of each event id with day >= N - ID_MEMORY_DAYS (35), so at
  least 30 days by event time. A duplicate in that memory (or among the 8 raw events) changes
  nothing and ``fold`` returns False. **An event re-posted more than 35 days behind the
  customer's newest event cannot be checked and is counted again** (so a shuffled import of a
  year of history loses nothing); :meth:`Summary.beyond_memory` tells the scorer, which counts
  them in a metric. Ids are pruned by N at the end of every fold, so which ids are remembered
  does not depend on the arrival order either.

Windows: day granularity throughout. A day d is inside the w-day window at ``now`` when
``0 <= now_day - d < w`` (``now_day``: ``now``'s day on the customer's clock); a week bucket counts when its first
day ``7*week`` satisfies it (so the 365-day window loses up to 6 days of its oldest, partial
week; the 30/90-day windows are all daily whenever now_day >= N - 1). Point-in-time reads
(``now < last_ts``): only buckets/days at or before ``now_day`` count; the bucket of
``now_day`` itself counts whole (events later that day included); recency falls back from the
exact newest-per-kind timestamps to the 8 raw events, then to bucket days (noon of the newest
day at or before now_day with that kind of event). Reads more than RETAIN_DAYS - 365 days before
N see a truncated 365-day window.

Features: schema 3 against schema 2 (``compute_features`` before this module)
-----------------------------------------------------------------------------
============================  =======================================  ==============================
feature                       from the summary                          differs from schema 2
============================  =======================================  ==============================
tenure_days                   now - min(first_ts, first_seen) (exact)   no
days_since_last_activity      exact newest non-complaint ts             no (when now >= it)
days_since_last_visit         exact newest visit ts                     no (when now >= it)
days_since_last_transaction   exact newest transaction ts               no (when now >= it)
active_days_30/90/365         bitmap popcount, days now_day-d < w       no (already by day)
visits_90                     daily buckets with now_day - d < 90       window by day, not by ms (1)
transactions_90/365           buckets (weeks by first day for 365)      window by day (1), week (2)
spend_30/90/365               integer thousandths / 1000                window (1)(2); exact sum (3)
avg_ticket_90/365             positive sum / positive count             window (1)(2); exact sum (3)
cadence_median_days           gaps of the 13 newest active days         no
cadence_spread_days           MAD of those gaps                         no
has_cadence                   >= 2 active days                          no
overdue_ratio                 days_since_last_activity / cadence        no
spend_trend                   spend_90 vs spend_365 per span            via spend (1)(2)(3)
ticket_trend                  avg_ticket_90 / avg_ticket_365            via tickets (1)(2)(3)
frequency_trend               active_days_90 vs active_days_365         no
complaints_90/365             unresolved complaint events in buckets    window (1)(2)
open_complaints               refs whose newest event is not resolved   no (4)
open_high_complaints          ... with (fallback) severity high         no (4)
days_since_last_complaint     exact newest complaint ts                 no (when now >= it)
refunds_90                    refund count in daily buckets             window (1)
online_share_365              online / channel events in buckets        window (1)(2)
bgnbd_x                       active_days_365 - born inside             no
bgnbd_t_x                     from bgnbd_T and recency                  no
bgnbd_T                       min(tenure, 365)                          no
============================  =======================================  ==============================

(1) Schema 2 counted an event when ``now_ms - ts <= w days`` (by ms); schema 3 counts the day
    when ``now_day - d < w`` — the same rule active_days always used. They differ only for the
    events of day ``now_day - w`` at or after now's time of day: schema 2 counted them, schema 3
    does not.
(2) Days older than DAILY_DAYS before N are in weeks; a week counts in the 365-day window when
    its first day is inside it (up to 6 of the oldest days of the year may be left out).
(3) Amounts are summed as integer thousandths: sums are exact (schema 2's float sums could
    differ in the last bits by order) and amounts with more than 3 decimals are rounded.
(4) Same rule (status of the ref's newest event by (ts, event id); severity falling back to the
    ref's previous one, else medium). Point-in-time reads earlier than all 4 kept events of a ref
    do not see the ref.

Encoding (``encode()``, format ``cw-s3``): seven parts joined by newlines (compact JSON never
contains a raw newline) — a JSON header (last_ts, the other exact times relative to it, the
first active day and the 13 newest active days relative to N, then 40 integers: the bucket of
day N and the three windows' sums at day N of the fields the features read; N less last_ts's
UTC day (-1, 0 or 1) and the newest event's UTC offset in minutes; and a crc32 of the two bucket
blocks), the active-day bitmap (base64), the daily bucket columns of the days before
N and the weekly bucket columns (JSON; one column per field, trailing zeros and empty columns
trimmed, a column of counts below 75 written one character per bucket), the complaint refs
(JSON), the raw events (JSON rows, times relative to last_ts) and the id memory (base64 of
sorted 11-byte records: 3-byte day, 8-byte blake2b). A raw event's row ends with its UTC
offset when it is not 0. The same content always gives the same string; parts unchanged since
:meth:`Summary.decode` are written back as read.

Why day N and the sums sit in the header: a common step of the stream (a visit and its
payment, a day's several purchases) folds an event into the newest day and reads the
features at that day. :meth:`Summary.decode` checks the two bucket blocks against their crc32
and leaves them encoded; such a step adds the event to day N's
bucket and to the sums, reads the windows from the sums and writes the blocks back as read, so
its cost does not depend on how full a customer's 91 days and 53 weeks are. The first event
of a later day shifts the blocks as written (``_advance_encoded``, any gap), and an event on
an earlier day is added to its bucket in them (``_add_text``, the first _TEXT_ADDS after a
decode). Anything else (a read at an earlier day, the daily series, bucket-day recency)
decodes them first (``_full``); blocks made to match their checksum that still do not decode raise the
same ValueError then. The previous formats are still read and written back as ``cw-s3``:
``cw-s2`` (UTC days: N is last_ts's UTC day, read at offset 0; a customer's later events at
another offset land on their own local days beside them), and ``cw-s1`` (day N inside the daily
block, no sums), decoded whole.

Bounds, measured by ``tests/unit/test_summary.py::test_encoded_size`` (one visit or
transaction per event spread over a year, amounts 12.5-80.0, ids like ``pos-000123-4567``):
10 events 847 bytes, 100 events 1,397 bytes (target 1.5 KB), 1,000 events 3,074 bytes (target
5 KB; the id memory of the last 35 days is 1,424 of them). Nothing grows with the history
beyond the windows, except one small entry per complaint ref. zlib was measured and is not
used: it would take 1,000 events to ~1,800 bytes for ~35 µs more per step.

Speed, measured by ``bench/summary_speed.py`` (Python 3.11, best of 7 rounds of CPU time, a
2-core machine): one scorer step — decode + fold one new event + features + encode — takes
14-19 µs compiled (24-32 µs as pure Python) for a customer with 10 to 1,000 events over a
year when the event lands on the newest day and the features are read at that day (the
blocks stay encoded), and 20-30 µs compiled (42-62 µs) when the event starts a new day and
the buckets shift (docs/summary.md). Bucket columns a customer never used (refunds,
complaints, channels for many) are skipped by the window sums, the shifts and the encoder
(``_used``); folding a whole history costs ~1.5-2.7 µs per event.
``compute_features`` over a raw list (training, ``as_of``) folds newest first: ~2.1 ms for
1,000 events, ~130 µs for 20 as pure Python (schema 2: ~0.9 ms and ~40 µs).

Compiled: ``make install`` compiles this module with mypyc (``scripts/native.py``) into
``services.scoring._summary_native``, a copy with this source's SHA-256 inside; at import this
module takes the copy's definitions when that digest is its own (:func:`_load_native`), and
:data:`NATIVE` says so. Without a C compiler, or after an edit not yet compiled (a warning),
the pure Python here runs: the same code, tested to give the same bytes and features.
"""

from __future__ import annotations

import binascii
import importlib
import importlib.util
import logging
import math
import sys
import zlib
from binascii import a2b_base64, b2a_base64
from bisect import insort
from collections.abc import Iterable, Sequence
from functools import lru_cache
from hashlib import blake2b, sha256
from operator import sub
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from services.common import jsonfast
from services.scoring.features import (
    BGNBD_WINDOW_DAYS,
    CAP_DAYS,
    DAY_MS,
    DEFAULT_CADENCE_DAYS,
    Activity,
    _ratio,
)

DAILY_DAYS = 91
RETAIN_DAYS = 371
WEEKS = 53  # week index j = N//7 - week is kept iff N - 7*week < RETAIN_DAYS iff j < 53
ID_MEMORY_DAYS = 35
RECENT_K = 8
LAST_ACTIVE_DAYS = 13
REF_EVENTS = 4
FORMAT = "cw-s3"
_FORMAT_2 = "cw-s2"  # read (days were UTC days: N is last_ts's, read in UTC), never written
_FORMAT_1 = "cw-s1"  # read (the day-N bucket inside the daily block, no sums), never written
_MINUTE_MS = 60_000

# Bucket fields (columns).
V, PN, PS, Z, NN, NS, CH, ON, C, U = range(10)
NF = 10
_BIT_V, _BIT_Z, _BIT_CH, _BIT_ON, _BIT_C, _BIT_U = (1 << f for f in (V, Z, CH, ON, C, U))
_BIT_P, _BIT_N = 1 << PN | 1 << PS, 1 << NN | 1 << NS
_MONEY = (PS, NS)
_WINDOW_FIELDS = ((30, (PS, NS)), (90, (V, PN, PS, Z, NN, NS, U)),
                  (365, (PN, PS, Z, NN, NS, U, CH, ON)))
# the fields each window's sums hold, as bit masks (same order as _WINDOW_FIELDS)
_WINDOW_MASKS = tuple(sum(1 << f for f in fields) for _, fields in _WINDOW_FIELDS)
_WINDOW_DAYS = tuple(w for w, _ in _WINDOW_FIELDS)
_USED_FIELDS: dict[int, tuple[tuple[int, ...], ...]] = {}
_ONLINE = frozenset(("online", "app", "delivery"))
_MASK = (1 << RETAIN_DAYS) - 1
_KIND_CODE = {"transaction": "t", "visit": "v", "complaint": "c"}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
# Small counts are written one character each ("0" = 0 ... "z" = 74).
_DIGITS = 75
_TO_CHAR = bytes(range(48, 48 + _DIGITS)) + bytes(256 - _DIGITS)
_FROM_CHAR = bytes(256)[:48] + bytes(range(_DIGITS)) + bytes(256 - 48 - _DIGITS)
_COUNT_BYTES = bytes(range(48, 48 + _DIGITS))
_EMPTY_BLOCK = "[]"  # a bucket block without a non-zero bucket, as _encode_block writes it
# Earlier-day events a summary adds to its blocks as written before it decodes them (see
# Summary._add_text): a batch's few; a whole history folded newest first decodes once.
_TEXT_ADDS = 16
_IDR = 11  # id memory record: 3-byte day (+ _DAY_BIAS), 8-byte blake2b of the event id
_DAY_BIAS = 1 << 23  # days before 1970 still fit

assert len(_TO_CHAR) == 256 and len(_FROM_CHAR) == 256

# A complaint ref's kept event: (ts, event_id, status, severity).
RefEvent = tuple[int, str, str | None, str | None]


def _id_hash(event_id: str) -> bytes:
    return blake2b(event_id.encode(), digest_size=8).digest()


def _used_fields(used: int) -> tuple[tuple[int, ...], ...]:
    """Per window, the fields it sums that ``used`` (Summary._used) marks: a column never used
    is all zeros. At most 1,024 masks, each computed once."""
    out = _USED_FIELDS.get(used)
    if out is None:
        out = _USED_FIELDS[used] = tuple(tuple(f for f in fields if used >> f & 1)
                                         for _, fields in _WINDOW_FIELDS)
    return out


def _milli(amount: float) -> int:
    return int(round(amount * 1000))


class Summary:
    """The bounded state of one customer (see the module docstring)."""

    __slots__ = ("first_ts", "last_ts", "last_visit", "last_tx", "last_activity",
                 "last_complaint", "_dc", "_wc", "_mask", "_last_days", "_first_active",
                 "_refs", "_recent", "_idb", "_raw", "_used", "_today", "_sums", "_crc",
                 "_cols", "_adds", "_n", "_tz")

    def __init__(self) -> None:
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_visit: int | None = None
        self.last_tx: int | None = None
        self.last_activity: int | None = None
        self.last_complaint: int | None = None
        # per field, per day back from N (index N - day): the daily buckets (empty while the
        # blocks stay encoded, see _today)
        self._dc: list[list[int]] = []
        # per field, per week back from N's week (index N//7 - week): the weekly buckets
        self._wc: list[list[int]] = []
        self._mask = 0  # bit i: day N - i had a non-complaint event
        self._last_days: list[int] = []  # the newest active days, ascending
        self._first_active: int | None = None
        # ref -> (kept events ascending by (ts, id), fallback (ts, id, severity) or None)
        self._refs: dict[str, tuple[list[RefEvent], tuple[int, str, str] | None]] = {}
        # the newest raw events as compact rows (see _row), ascending by (ts, event_id)
        self._recent: list[list[Any]] = []
        self._idb = b""  # sorted id memory records (day, hash)
        # encoded parts known unchanged since decode: bitmap, days before N, weeks, refs (a new
        # summary's blocks are empty: a new customer's first events never build 1,440 zeros)
        self._raw: dict[int, str] = {2: _EMPTY_BLOCK, 3: _EMPTY_BLOCK}
        # bit f: bucket column f may hold a non-zero count (set when folding or decoding one;
        # never cleared): the window sums skip the columns a customer never used
        self._used = 0
        # Decoded but not yet needed, the daily and weekly blocks stay encoded (_raw[2], _raw[3];
        # _dc and _wc are then empty) and the bucket of day N is this list, one value per
        # field: a step that folds into day N only and reads the features at day N (a common
        # step of the stream) never decodes them (see _full). None once the blocks are decoded.
        self._today: list[int] | None = [0] * NF
        # per window (_WINDOW_FIELDS), the bucket sums at day N of the window's fields (others
        # 0): None when unknown (computed and kept by _sums_at_n; day-N folds add to them)
        self._sums: list[list[int]] | None = [[0] * NF, [0] * NF, [0] * NF]
        # (daily text, weekly text, their crc32) as last read or written
        self._crc: tuple[str, str, int] | None = None
        # (daily text, weekly text, their columns and mask as _blocks reads them)
        self._cols: tuple[str, str, list[Any], list[Any], int] | None = None
        # events on an earlier day than N still to be added to the blocks as written (_add_text)
        self._adds = _TEXT_ADDS
        # N: the newest local day of an event folded (days are each event's own calendar day,
        # Activity.day), None while empty
        self._n: int | None = None
        # the newest event's UTC offset in minutes: reads count days on that wall clock
        self._tz = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls) -> Summary:
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Summary) and self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Summary({self.encode()!r})"

    @property
    def newest_day(self) -> int | None:
        return self._n

    @property
    def tz_minutes(self) -> int:
        """The UTC offset (minutes) of the newest event: the wall clock its days are read on."""
        return self._tz

    def _day_at(self, ms: int) -> int:
        """The day of the instant ``ms`` on the customer's wall clock (the newest event's UTC
        offset): the day a read at ``ms`` counts its windows back from."""
        return (ms + self._tz * _MINUTE_MS) // DAY_MS

    def _full(self) -> None:
        """Decode the bucket blocks :meth:`decode` left encoded, if it did: everything but a
        fold into day N and a features read at day N needs them."""
        today = self._today
        if today is None:
            return
        try:
            dc, daily = _decode_block(self._raw[2], DAILY_DAYS, lead=1)
            wc, weekly = _decode_block(self._raw[3], WEEKS)
        except (ValueError, TypeError) as exc:  # the blocks matched their checksum: hand-made
            raise ValueError(f"not an encoded customer summary ({FORMAT}): {exc}") from None
        used = daily | weekly
        for f, x in enumerate(today):
            if x:
                dc[f][0] = x
                used |= 1 << f
        self._dc, self._wc, self._today = dc, wc, None
        self._used |= used

    def _blocks(self) -> tuple[list[Any], list[Any], int] | None:
        """While the bucket blocks are encoded: their columns as written (a count column a
        string of count characters, others lists; "" for an empty one, NF of each) and a bit
        per column not empty in either, kept for the blocks' texts of the moment (read-only
        for the caller). None for anything :func:`_decode_block` refuses (:meth:`_full`
        then says what)."""
        daily_text, weekly_text = self._raw[2], self._raw[3]
        known = self._cols
        if known is not None and known[0] is daily_text and known[1] is weekly_text:
            return known[2], known[3], known[4]
        try:
            daily = jsonfast.loads(daily_text)
            weekly = jsonfast.loads(weekly_text)
        except ValueError:
            return None
        mask = 0
        for cols, size in ((daily, DAILY_DAYS - 1), (weekly, WEEKS)):
            if type(cols) is not list or len(cols) > NF:
                return None
            for f, col in enumerate(cols):
                if _column_error(col, size):
                    return None
                if not col:
                    cols[f] = ""
                    continue
                mask |= 1 << f
            cols += [""] * (NF - len(cols))
        self._cols = (daily_text, weekly_text, daily, weekly, mask)
        return daily, weekly, mask

    def _window_sums_encoded(self, now_day: int) -> list[list[int]] | None:
        """:meth:`_window_sums` from the encoded blocks (None where :meth:`_blocks` is)."""
        today = self._today
        assert today is not None
        blocks = self._blocks()
        if blocks is None:
            return None
        daily, weekly, mask = blocks
        n = self.newest_day
        assert n is not None
        i_lo, w_lo, ranges = _window_ranges(n, now_day)
        d_lo = max(i_lo, 1) - 1  # the daily block starts at day N - 1
        with_today = i_lo == 0 and any(today)  # (all zero after a step moved day N)
        out = []
        for (_, fields), used, (i_hi, w_hi) in zip(_WINDOW_FIELDS, _used_fields(mask), ranges,
                                                   strict=True):
            d_hi = i_hi - 1
            s = [0] * NF
            if with_today and d_hi >= 0:
                for f in fields:
                    s[f] = today[f]
            for f in used:
                if d_lo < d_hi:
                    s[f] += _bucket_sum(daily[f], d_lo, d_hi)
                if w_lo < w_hi:
                    s[f] += _bucket_sum(weekly[f], w_lo, w_hi)
            out.append(s)
        return out

    def _window_sums(self, now_day: int) -> list[list[int]]:
        """Per window (_WINDOW_FIELDS), the bucket sums at ``now_day`` of its fields: the daily
        buckets with ``0 <= now_day - day < w`` and the weeks whose first day is."""
        if self._today is not None:
            sums = self._window_sums_encoded(now_day)
            if sums is not None:
                return sums
        self._full()
        n = self.newest_day
        assert n is not None
        dc, wc, used = self._dc, self._wc, self._used
        i_lo, w_lo, ranges = _window_ranges(n, now_day)
        out = []
        for fields, (i_hi, w_hi) in zip(_used_fields(used), ranges, strict=True):
            s = [0] * NF
            if w_lo < w_hi:
                for f in fields:
                    s[f] = sum(dc[f][i_lo:i_hi]) + sum(wc[f][w_lo:w_hi])
            else:
                for f in fields:
                    s[f] = sum(dc[f][i_lo:i_hi])
            out.append(s)
        return out

    def _sums_later(self, n: int, now_day: int) -> list[list[int]] | None:
        """:meth:`_window_sums` at ``now_day``, later than day N (``n``, as the buckets stand),
        from the sums at day N less the buckets that leave each window by then: a few days of
        each window's oldest end, where :meth:`_window_sums` adds up every bucket. None when
        the sums at N are unknown, or where :meth:`_blocks` is."""
        sums = self._sums
        if sums is None or now_day <= n:
            return None
        today = self._today
        daily: list[Any]  # decoded columns, or the blocks' (strings and lists)
        weekly: list[Any]
        if today is None:
            daily, weekly, used = self._dc, self._wc, self._used
        else:
            blocks = self._blocks()
            if blocks is None:
                return None
            daily, weekly, used = blocks
            for f, x in enumerate(today):
                if x:
                    used |= 1 << f
        # the same first week at both days (the newest that can hold a bucket: now_day > n)
        _, w_lo, at_n = _window_ranges(n, n)
        later = _window_ranges(n, now_day)[2]
        out = []
        for row, fields, (i_n, w_n), (i_l, w_l) in zip(sums, _used_fields(used), at_n, later,
                                                       strict=True):
            row = row[:]
            w_from = max(w_l, w_lo)
            for f in fields:
                gone = 0
                if i_l < i_n:  # daily indices i_l .. i_n - 1 leave the window
                    if today is None:
                        gone = sum(daily[f][i_l:i_n])
                    elif i_l:
                        gone = _bucket_sum(daily[f], i_l - 1, i_n - 1)
                    else:  # day N's bucket too (the block holds the days before it)
                        gone = today[f] + _bucket_sum(daily[f], 0, i_n - 1)
                if w_from < w_n:
                    gone += _bucket_sum(weekly[f], w_from, w_n)
                row[f] -= gone
            out.append(row)
        return out

    def _sums_at(self, now_day: int) -> list[list[int]]:
        """:meth:`_window_sums` at ``now_day``: kept at day N, from them later, else added up."""
        n = self.newest_day
        if now_day == n:
            return self._sums_at_n()
        assert n is not None
        if now_day > n:
            sums = self._sums_later(n, now_day)
            if sums is not None:
                return sums
        return self._window_sums(now_day)

    def _sums_at_n(self) -> list[list[int]]:
        """:meth:`_window_sums` at day N, kept (read-only for the caller)."""
        sums = self._sums
        if sums is None:
            n = self.newest_day
            assert n is not None
            sums = self._sums = self._window_sums(n)
        return sums

    # ------------------------------------------------------------------ id memory
    def _remembered(self, h: bytes) -> bool:
        buf = self._idb
        i = buf.find(h)
        while i != -1:
            if i % _IDR == 3:
                return True
            i = buf.find(h, i + 1)
        return False

    def _remember(self, day: int, h: bytes) -> None:
        rec = (day + _DAY_BIAS).to_bytes(3, "big") + h
        buf = self._idb
        lo, hi = 0, len(buf) // _IDR
        while lo < hi:
            mid = (lo + hi) // 2
            if buf[mid * _IDR:(mid + 1) * _IDR] < rec:
                lo = mid + 1
            else:
                hi = mid
        self._idb = buf[:lo * _IDR] + rec + buf[lo * _IDR:]

    def _forget_before(self, day: int) -> None:
        buf = self._idb
        if not buf or int.from_bytes(buf[:3], "big") >= day + _DAY_BIAS:
            return
        key = (day + _DAY_BIAS).to_bytes(3, "big")
        lo, hi = 0, len(buf) // _IDR
        while lo < hi:
            mid = (lo + hi) // 2
            if buf[mid * _IDR:mid * _IDR + 3] < key:
                lo = mid + 1
            else:
                hi = mid
        self._idb = buf[lo * _IDR:]

    def knows(self, event_id: str) -> bool:
        """True when ``event_id`` is remembered (id memory, or one of the raw events kept)."""
        return self._remembered(_id_hash(event_id)) or \
            any(r[2] == event_id for r in self._recent)

    def beyond_memory(self, a: Activity) -> bool:
        """True when ``a`` is older than the id memory's horizon (more than ID_MEMORY_DAYS days
        before the newest event's day) and not among the kept raw events: a re-post of it cannot
        be recognised, and folding it counts it (again)."""
        n = self.newest_day
        return (n is not None and (a.ts + a.tz_minutes * _MINUTE_MS) // DAY_MS < n - ID_MEMORY_DAYS
                and not any(r[2] == a.event_id for r in self._recent))

    # ------------------------------------------------------------------ folding
    def fold(self, a: Activity) -> bool:
        """Apply one event; False (and no change at all) if its event_id is remembered (a
        duplicate). Mutates self."""
        h = _id_hash(a.event_id)
        if self._remembered(h):
            return False
        for r in self._recent:
            if r[2] == a.event_id:
                return False
        self._apply(a, h)
        return True

    def _apply(self, a: Activity, h: bytes | None = None) -> None:  # noqa: C901  one branch per event kind, the hot path
        """Fold ``a``, known not to be a duplicate (``h``: its id hash, computed here when the
        id memory needs it). :func:`services.scoring.features.compute_features` calls this
        after dropping a list's duplicates itself."""
        ts = a.ts
        tz = a.tz_minutes
        day = (ts + tz * _MINUTE_MS) // DAY_MS
        old_n = self._n
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        last = self.last_ts
        if last is None or ts > last or (ts == last and tz > self._tz):
            self.last_ts = ts
            self._tz = tz
        n = day if old_n is None or day > old_n else old_n
        self._n = n
        if old_n is not None and n > old_n:
            self._advance(old_n, n)

        kind = a.kind
        adds: list[tuple[int, int]] = []  # (field, amount) added to the event's bucket
        if kind == "complaint":
            if self.last_complaint is None or ts > self.last_complaint:
                self.last_complaint = ts
            adds.append((C, 1))
            self._used |= _BIT_C
            if a.status != "resolved":
                adds.append((U, 1))
                self._used |= _BIT_U
            self._fold_ref(a, n)
        else:
            if self.last_activity is None or ts > self.last_activity:
                self.last_activity = ts
            if a.channel is not None:
                adds.append((CH, 1))
                self._used |= _BIT_CH
                if a.channel in _ONLINE:
                    adds.append((ON, 1))
                    self._used |= _BIT_ON
            if kind == "visit":
                adds.append((V, 1))
                self._used |= _BIT_V
                if self.last_visit is None or ts > self.last_visit:
                    self.last_visit = ts
            elif kind == "transaction":
                if self.last_tx is None or ts > self.last_tx:
                    self.last_tx = ts
                amount = a.amount or 0.0
                if amount > 0:
                    adds += ((PN, 1), (PS, _milli(amount)))
                    self._used |= _BIT_P
                elif amount < 0:
                    adds += ((NN, 1), (NS, _milli(-amount)))
                    self._used |= _BIT_N
                else:
                    adds.append((Z, 1))
                    self._used |= _BIT_Z
            self._fold_active_day(day, n)

        # the bucket
        i = n - day
        if i == 0:  # day N's: the window sums at day N, if known, move by the same amounts
            today = self._today
            if today is not None:
                for f, x in adds:
                    today[f] += x
            else:
                dc = self._dc
                for f, x in adds:
                    dc[f][0] += x
            sums = self._sums
            if sums is not None:
                for mask, row in zip(_WINDOW_MASKS, sums, strict=True):
                    for f, x in adds:
                        if mask >> f & 1:
                            row[f] += x
        elif self._today is not None and self._add_text(i, n, day, adds):
            self._sums = None
        else:
            self._full()
            self._sums = None
            cols = None
            if i < DAILY_DAYS:
                cols = self._dc
                self._raw.pop(2, None)
            else:
                i = n // 7 - day // 7
                if i < WEEKS:
                    cols = self._wc
                    self._raw.pop(3, None)
                # else: older than every kept bucket, counted nowhere
            if cols is not None:
                for f, x in adds:
                    cols[f][i] += x

        # the raw events
        rec = self._recent
        if len(rec) < RECENT_K or (ts, a.event_id) > (rec[0][1], rec[0][2]):
            insort(rec, _row(a), key=lambda r: (r[1], r[2]))
            if len(rec) > RECENT_K:
                del rec[0]
        if day >= n - ID_MEMORY_DAYS:
            self._remember(day, _id_hash(a.event_id) if h is None else h)

    def _add_text(self, i: int, n: int, day: int, adds: list[tuple[int, int]]) -> bool:
        """:meth:`_apply`'s bucket for an event ``i`` days before day N (``day``) while the
        blocks are still encoded — an earlier event of a customer whose batch is folded newest
        first, a late event: the one bucket is added to in its columns as the block holds them
        (a string of count characters, a list) and the block written again, where decoding
        both blocks would cost more and make :meth:`encode` write them afresh. Exactly what the
        decoded add writes (tested). False, with nothing changed, where this does not apply (a
        count character past the last, blocks :meth:`_blocks` refuses) and after _TEXT_ADDS
        such adds (a history folded newest first: decoded once, the rest cost a list add)."""
        if self._adds <= 0:
            return False
        blocks = self._blocks()
        if blocks is None:
            return False
        daily, weekly, mask = blocks
        if i < DAILY_DAYS:
            cols, k = daily, i - 1  # the daily block starts at day N - 1
        else:
            k = n // 7 - day // 7
            if k >= WEEKS:
                return True  # older than every kept bucket: counted nowhere
            cols = weekly
        new = cols[:]  # (the columns _blocks keeps are read-only)
        for f, x in adds:
            col = _bucket_add(new[f], k, x, f in _MONEY)
            if col is None:
                return False
            new[f] = col
            if col:
                mask |= 1 << f
        text = _dumps(_trim_columns(new[:]))
        self._adds -= 1
        if cols is daily:
            self._raw[2] = text
            self._cols = (text, self._raw[3], new, weekly, mask)
        else:
            self._raw[3] = text
            self._cols = (self._raw[2], text, daily, new, mask)
        return True

    def _fold_active_day(self, day: int, n: int) -> None:
        i = n - day
        if i < RETAIN_DAYS and not self._mask >> i & 1:
            self._mask |= 1 << i
            self._raw.pop(1, None)
        if self._first_active is None or day < self._first_active:
            self._first_active = day
        ld = self._last_days
        if day not in ld and (len(ld) < LAST_ACTIVE_DAYS or day > ld[0]):
            insort(ld, day)
            if len(ld) > LAST_ACTIVE_DAYS:
                del ld[0]

    def _fold_ref(self, a: Activity, n: int) -> None:
        ref = a.complaint_ref or a.event_id
        evs, base = self._refs.get(ref, ([], None))
        if any(e[0] == a.ts and e[1] == a.event_id for e in evs):
            return  # a re-post beyond the id memory: the ref's state already has it
        insort(evs, (a.ts, a.event_id, a.status, a.severity), key=lambda e: (e[0], e[1]))
        self._refs[ref] = (evs, base)
        self._trim_ref(ref, n)

    def _trim_ref(self, ref: str, n: int) -> None:
        """Keep the ref's newest event always, and up to REF_EVENTS newest ones not older than
        RETAIN_DAYS before ``n``; the rest only leave their newest severity behind."""
        self._raw.pop(4, None)
        evs, base = self._refs[ref]
        horizon = n - RETAIN_DAYS
        keep: list[RefEvent] = []
        for i, e in enumerate(evs):
            newest = i == len(evs) - 1
            if newest or (len(evs) - i <= REF_EVENTS and e[0] // DAY_MS > horizon):
                keep.append(e)
            elif e[3] and (base is None or (e[0], e[1]) > (base[0], base[1])):
                base = (e[0], e[1], e[3])
        self._refs[ref] = (keep, base)

    def _advance(self, old_n: int, n: int) -> None:
        """The newest day moved from ``old_n`` to ``n``: shift the buckets (days leaving the
        daily span go into their weeks), the bitmap, and prune the id memory and refs. Moved
        less than the daily span, the window sums at the new day N are those of the old
        buckets at that day, taken before the shift: a day that leaves the daily span then
        goes into a week whose first day is still inside the year (a longer move can put a
        day of the year into a week that starts before it)."""
        sums = self._sums_later(old_n, n) if n - old_n < DAILY_DAYS - 1 else None
        self._mask = (self._mask << (n - old_n)) & _MASK
        self._raw.pop(1, None)
        if self._today is None or not self._advance_encoded(old_n, n):
            self._advance_decoded(old_n, n)
        self._sums = sums
        self._forget_before(n - ID_MEMORY_DAYS)
        horizon = n - RETAIN_DAYS
        for ref, (evs, _) in list(self._refs.items()):
            if len(evs) > 1 and evs[0][0] // DAY_MS <= horizon:
                self._trim_ref(ref, n)

    def _advance_decoded(self, old_n: int, n: int) -> None:
        """:meth:`_advance`'s bucket shift on the decoded columns."""
        self._full()
        shift = n - old_n
        self._raw.pop(2, None)
        wshift = n // 7 - old_n // 7
        wc, used = self._wc, self._used
        if wshift:
            self._raw.pop(3, None)
            for f in range(NF):
                col = wc[f]
                if used >> f & 1 and any(col):  # an all-zero column stays as it is
                    wc[f] = ([0] * wshift + col[:WEEKS - wshift]) if wshift < WEEKS \
                        else [0] * WEEKS
        dc = self._dc
        keep = max(DAILY_DAYS - shift, 0)
        for f in range(NF):
            col = dc[f]
            if not used >> f & 1 or not any(col):
                continue
            tail = col[keep:]
            dc[f] = [0] * (DAILY_DAYS - keep) + col[:keep]
            if any(tail):
                self._raw.pop(3, None)
                _add_to_weeks(wc[f], tail, old_n - keep, n)

    def _advance_encoded(self, old_n: int, n: int) -> bool:
        """:meth:`_advance`'s bucket shift while the blocks are still encoded (the usual first
        step of a batch for a customer seen on an earlier day): the blocks' columns are shifted
        as the text :func:`_encode_block` writes (a count column is a string, one character a
        bucket), never built as 1,440 integers and written back. The new blocks are exactly
        what the decoded shift writes (tested), whatever the gap. False, with nothing changed,
        where this does not apply (a count of 75 or more): the decoded shift then."""
        today = self._today
        assert today is not None
        blocks = self._blocks()
        if blocks is None:
            return False  # _full says what is wrong
        daily, weekly, mask = blocks
        for f, x in enumerate(today):
            if x:
                mask |= 1 << f
        new_d: list[Any] = [""] * NF  # columns as the blocks hold them
        new_w: list[Any] = [""] * NF
        for f in range(NF):
            if mask >> f & 1:
                cols = _shift_encoded(f in _MONEY, daily[f], weekly[f], today[f], old_n, n)
                if cols is None:
                    return False
                new_d[f], new_w[f] = cols
        daily_text = self._raw[2] = _dumps(_trim_columns(new_d[:]))
        weekly_text = self._raw[3] = _dumps(_trim_columns(new_w[:]))
        kept = 0  # (a loop: compiled, a generator here is an object of its own)
        for f in range(NF):
            if new_d[f] or new_w[f]:
                kept |= 1 << f
        self._cols = (daily_text, weekly_text, new_d, new_w, kept)
        self._today = [0] * NF
        self._used |= mask
        return True

    # ------------------------------------------------------------------ reads
    def newest_event_id(self) -> str | None:
        return self._recent[-1][2] if self._recent else None

    def recent(self) -> list[Activity]:
        """The newest raw events kept (up to RECENT_K), oldest first."""
        return [_act(r) for r in self._recent]

    def active_days(self, now_ms: int, limit: int = LAST_ACTIVE_DAYS) -> list[int]:
        """The newest ``limit`` active days at or before ``now_ms``, as days before now,
        newest first (0 = today): read only; the lifecycle's won_back needs the gaps."""
        now_day = self._day_at(now_ms)
        return [now_day - d for d in self._active_days_desc(now_day, limit)]

    def return_after_gap(self, now_ms: int, quiet: float, within: int | None = None
                         ) -> int | None:
        """:func:`services.scoring.lifecycle.return_after_gap` over :meth:`active_days` at
        ``now_ms``, without building them when the newest active days span less than
        ``quiet`` (no gap between them is as long: a regular customer, the usual case)."""
        n = self.newest_day
        if n is not None and self._day_at(now_ms) >= n:
            ld = self._last_days  # (ascending: the days active_days gives, oldest last)
            if len(ld) < 2 or ld[-1] - ld[0] < quiet:
                return None
        return return_after_gap(self.active_days(now_ms), quiet, within)

    def _active_days_desc(self, upto_day: int, limit: int) -> list[int]:
        """The newest ``limit`` active days at or before ``upto_day``, newest first (exact
        within the bitmap and the kept newest active days)."""
        out: list[int] = []
        n = self.newest_day
        if n is None:
            return out
        if upto_day >= n:
            return self._last_days[::-1][:limit]
        lo = n - upto_day
        m = self._mask >> lo
        while m and len(out) < limit:
            low = m & -m
            i = low.bit_length() - 1
            out.append(upto_day - i)
            m ^= low
        extra = [d for d in self._last_days if d <= upto_day and n - d >= RETAIN_DAYS]
        if self._first_active is not None and self._first_active <= upto_day:
            extra.append(self._first_active)
        if extra:
            out = sorted(set(out) | set(extra), reverse=True)
        return out[:limit]

    def _count_active(self, lo_day: int, hi_day: int) -> int:
        """Active days d with lo_day <= d <= hi_day."""
        n = self.newest_day
        if n is None or hi_day < lo_day:
            return 0
        i_lo = max(n - hi_day, 0)
        i_hi = min(n - lo_day, RETAIN_DAYS - 1)
        count = ((self._mask >> i_lo) & ((1 << (i_hi - i_lo + 1)) - 1)).bit_count() \
            if i_hi >= i_lo else 0
        if n - lo_day >= RETAIN_DAYS:  # older than the bitmap: what else is known
            older = {d for d in self._last_days if n - d >= RETAIN_DAYS and lo_day <= d <= hi_day}
            fa = self._first_active
            if fa is not None and n - fa >= RETAIN_DAYS and lo_day <= fa <= hi_day:
                older.add(fa)
            count += len(older)
        return count

    def active_days_since(self, day: int) -> int:
        """Active days (non-complaint) on or after ``day`` (exact within RETAIN_DAYS of the
        newest day; older ones only as far as the 13 newest active days and the first)."""
        n = self.newest_day
        return 0 if n is None else self._count_active(day, n)

    def returned_between(self, start_ms: int, end_ms: int) -> bool:
        """Any non-complaint activity in [start_ms, end_ms]: exact against the raw events kept
        and the newest activity, else by day (an active day from start's day to end's day)."""
        if end_ms < start_ms or self.last_activity is None:
            return False
        if start_ms <= self.last_activity <= end_ms:
            return True
        if any(start_ms <= r[1] <= end_ms and r[0] != "c" for r in self._recent):
            return True
        if self.last_activity < start_ms:
            return False
        return self._count_active(self._day_at(start_ms), self._day_at(end_ms)) > 0

    def last_at_or_before(self, ms: int) -> int | None:
        """The newest event time (any kind) at or before ``ms``: exact when it is the newest
        of its kind or still among the raw events kept, else noon of its bucket day; None
        when nothing known is that old (a point-in-time read of a customer not yet seen)."""
        if self.last_ts is None or self.first_ts is None or self.first_ts > ms:
            return None
        if self.last_ts <= ms:
            return self.last_ts
        found = [t for t in (
            self._newest_ts(self.last_activity, ms, None, (V, PN, Z, NN)),
            self._newest_ts(self.last_complaint, ms, ("complaint",), (C,)),
        ) if t is not None]
        return max(found) if found else self.first_ts

    def daily(self) -> list[dict[str, float]]:
        """Per day of the daily span that had events, oldest first: ``day`` (days since the
        epoch), ``visits``, ``transactions`` (refunds apart), ``refunds``, ``complaints``
        (raised or still open), ``complaints_resolved`` (resolution events) and ``spend`` (net
        of refunds)."""
        n = self.newest_day
        if n is None:
            return []
        self._full()
        out: list[dict[str, float]] = []
        for i in range(DAILY_DAYS - 1, -1, -1):
            col = [self._dc[f][i] for f in range(NF)]
            if not (col[V] or col[PN] or col[Z] or col[NN] or col[C]):
                continue
            out.append({"day": n - i, "visits": col[V], "transactions": col[PN] + col[Z],
                        "refunds": col[NN], "complaints": col[U],
                        "complaints_resolved": col[C] - col[U],
                        "spend": (col[PS] - col[NS]) / 1000})
        return out

    def _newest_ts(self, exact: int | None, now_ms: int, kinds: tuple[str, ...] | None,
                   fields: tuple[int, ...]) -> int | None:
        """The newest event time at or before now of some kind: exact, else from the raw
        events, else noon of the newest bucket day with one (None when none is known)."""
        if exact is None or exact <= now_ms:
            return exact
        for r in self._recent[::-1]:
            if r[1] <= now_ms and (_CODE_KIND.get(r[0], r[0]) in kinds if kinds else r[0] != "c"):
                return int(r[1])
        now_day = self._day_at(now_ms)
        n = self.newest_day
        assert n is not None
        best: int | None = None
        if kinds is None:  # any activity: the exact active days
            found = self._active_days_desc(now_day, 1)
            best = found[0] if found else None
        else:
            self._full()
            for i in range(max(n - now_day, 0), DAILY_DAYS):
                if any(self._dc[f][i] for f in fields):
                    best = n - i
                    break
            if best is None:
                for j in range(max(n // 7 - now_day // 7, 0), WEEKS):
                    if any(self._wc[f][j] for f in fields):
                        best = min(7 * (n // 7 - j) + 6, now_day)
                        break
        if best is None:
            return None
        return min(best * DAY_MS + DAY_MS // 2 - self._tz * _MINUTE_MS, now_ms)

    def _open_refs(self, now_ms: int) -> list[str]:
        """Severity of every ref open at now."""
        return [sev for _, _, sev in self.open_complaints(now_ms)]

    def open_complaints(self, now_ms: int) -> list[tuple[str, int, str]]:
        """(complaint ref, time of its newest event, severity) of every complaint open at
        ``now_ms``, by ref: what a resolution has to name (``complaint_id``) and follow."""
        out: list[tuple[str, int, str]] = []
        for ref, (evs, base) in self._refs.items():
            if evs[-1][0] <= now_ms:
                kept = evs
            else:
                kept = [e for e in evs if e[0] <= now_ms]
                if not kept:
                    continue
            if (kept[-1][2] or "open") == "resolved":
                continue
            sev = next((e[3] for e in reversed(kept) if e[3]), None)
            out.append((ref, kept[-1][0], sev or (base[2] if base else "medium")))
        return out

    def features(self, now_ms: int, first_seen_ms: int | None = None) -> dict[str, float]:
        """The :data:`FEATURE_NAMES` values at ``now_ms`` (see the module docstring for the
        windows and for reads earlier than ``last_ts``). Every value is a finite float."""
        now_day = self._day_at(now_ms)
        firsts = [t for t in (self.first_ts, first_seen_ms) if t is not None and t <= now_ms]
        first = min(firsts) if firsts else now_ms
        tenure = (now_ms - first) / DAY_MS

        def since(ts: int | None) -> float:
            return min((now_ms - ts) / DAY_MS, CAP_DAYS) if ts is not None else min(tenure, CAP_DAYS)

        if self.last_ts is None:
            s30 = s90 = s365 = [0] * NF
        else:
            s30, s90, s365 = self._sums_at(now_day)
        spend30 = (s30[PS] - s30[NS]) / 1000
        spend90 = (s90[PS] - s90[NS]) / 1000
        spend365 = (s365[PS] - s365[NS]) / 1000

        n = self.newest_day
        if n is not None and now_day >= n:  # the usual read: the windows' newest bits
            lag, m = now_day - n, self._mask
            active = {w: (m & ((1 << (w - lag)) - 1)).bit_count() if lag < w else 0
                      for w in (30, 90, 365)}
        else:
            active = {w: self._count_active(now_day - w + 1, now_day) for w in (30, 90, 365)}
        newest_first = self._active_days_desc(now_day, LAST_ACTIVE_DAYS)
        has_cadence = len(newest_first) >= 2
        if has_cadence:  # median and MAD of the gaps, as statistics.median gives them
            # whole days (exact in floats): one float() at the end, not one per gap
            gaps = sorted(map(sub, newest_first, newest_first[1:]))
            mid = _sorted_median(gaps)
            cadence = float(max(mid, 1))
            spread = float(_sorted_median(sorted([abs(g - mid) for g in gaps]))) \
                if len(gaps) >= 2 else 0.0
        else:
            cadence, spread = max(DEFAULT_CADENCE_DAYS, 1.0), 0.0

        last_activity = self._newest_ts(self.last_activity, now_ms, None, ())
        last_visit = self._newest_ts(self.last_visit, now_ms, ("visit",), (V,))
        last_tx = self._newest_ts(self.last_tx, now_ms, ("transaction",), (PN, Z, NN))
        last_complaint = self._newest_ts(self.last_complaint, now_ms, ("complaint",), (C,))
        since_activity = since(last_activity)
        overdue = since_activity / cadence

        avg_90 = s90[PS] / 1000 / s90[PN] if s90[PN] else 0.0
        avg_365 = s365[PS] / 1000 / s365[PN] if s365[PN] else 0.0
        span = max(min(tenure, 365.0), 1.0)
        base_rate_spend = spend365 / span * min(90.0, span) if spend365 > 0 else 0.0
        spend_trend = _ratio(spend90, base_rate_spend)
        ticket_trend = _ratio(avg_90, avg_365) if avg_365 > 0 and s90[PN] else 1.0
        base_rate_days = active[365] / span * min(90.0, span)
        frequency_trend = _ratio(active[90], base_rate_days)

        fa = self._first_active
        born_inside = fa is not None and fa <= now_day and now_day - fa < BGNBD_WINDOW_DAYS
        bg_T = min(tenure, float(BGNBD_WINDOW_DAYS))
        bg_x = max(active[365] - (1 if born_inside else 0), 0)
        bg_tx = min(max(bg_T - since_activity, 0.0), bg_T) if bg_x > 0 else 0.0

        open_refs = self._open_refs(now_ms)
        out = {
            "tenure_days": min(tenure, 3650.0),
            "days_since_last_activity": since_activity,
            "days_since_last_visit": since(last_visit),
            "days_since_last_transaction": since(last_tx),
            "active_days_30": float(active[30]),
            "active_days_90": float(active[90]),
            "active_days_365": float(active[365]),
            "visits_90": float(s90[V]),
            "transactions_90": float(s90[PN] + s90[Z] + s90[NN]),
            "transactions_365": float(s365[PN] + s365[Z] + s365[NN]),
            "spend_30": spend30,
            "spend_90": spend90,
            "spend_365": spend365,
            "avg_ticket_90": avg_90,
            "avg_ticket_365": avg_365,
            "cadence_median_days": cadence,
            "cadence_spread_days": spread,
            "has_cadence": 1.0 if has_cadence else 0.0,
            "overdue_ratio": min(overdue, 50.0),
            "spend_trend": spend_trend,
            "ticket_trend": ticket_trend,
            "frequency_trend": frequency_trend,
            "complaints_90": float(s90[U]),
            "complaints_365": float(s365[U]),
            "open_complaints": float(len(open_refs)),
            "open_high_complaints": float(sum(1 for s in open_refs if s == "high")),
            "days_since_last_complaint": since(last_complaint) if last_complaint is not None
            else CAP_DAYS,
            "refunds_90": float(s90[NN]),
            "online_share_365": s365[ON] / s365[CH] if s365[CH] else 0.0,
            "bgnbd_x": float(bg_x),
            "bgnbd_t_x": bg_tx,
            "bgnbd_T": bg_T,
        }
        if all(map(math.isfinite, out.values())):  # the usual case, at C speed
            return out
        return {k: (v if math.isfinite(v) else 0.0) for k, v in out.items()}

    # ------------------------------------------------------------------ codec
    def encode(self) -> str:
        """Compact and deterministic (the same content gives the same string): seven parts
        separated by newlines (compact JSON never holds a raw newline) — header, active-day
        bitmap (base64), daily buckets (all but day N's, which is in the header with the window
        sums at day N), weekly buckets, complaint refs, raw events, id memory (base64). Parts
        unchanged since :meth:`decode` are written back as they were read."""
        lt = self.last_ts
        n = self._n
        if lt is None or n is None:
            return FORMAT
        raw = self._raw

        def rel(t: int | None) -> int | None:
            return None if t is None else lt - t

        today = self._today
        if today is None:
            today = [col[0] for col in self._dc]
        daily = raw.get(2)
        if daily is None:
            daily = _encode_block(self._dc, self._used, start=1)
        weeks = raw.get(3)
        if weeks is None:
            weeks = _encode_block(self._wc, self._used)
        known = self._crc
        if known is not None and known[0] is daily and known[1] is weeks:
            crc = known[2]
        else:
            crc = _blocks_crc(daily, weeks)
            self._crc = (daily, weeks, crc)
        header = [FORMAT, lt, rel(self.first_ts), rel(self.last_visit), rel(self.last_tx),
                  rel(self.last_activity), rel(self.last_complaint),
                  None if self._first_active is None else n - self._first_active,
                  [n - d for d in reversed(self._last_days)], today + _flat(self._sums_at_n()),
                  n - lt // DAY_MS, self._tz, crc]
        bitmap = raw.get(1)
        if bitmap is None:
            mask = self._mask
            bitmap = b2a_base64(mask.to_bytes((mask.bit_length() + 7) // 8, "little"),
                                newline=False).decode()
        refs = raw.get(4)
        if refs is None:
            refs = _dumps([[ref, [list(e) for e in evs], list(base) if base else None]
                           for ref, (evs, base) in sorted(self._refs.items())])
        recent = [[r[0], lt - r[1], *r[2:]] for r in self._recent]
        return "\n".join((_dumps(header), bitmap, daily, weeks, refs, _dumps(recent),
                          b2a_base64(self._idb, newline=False).decode()))

    @classmethod
    def decode(cls, blob: str | bytes) -> Summary:
        """The summary :meth:`encode` wrote (this version's, or the previous ``cw-s1``);
        ValueError for anything else. The bucket blocks are checked against their checksum
        here and decoded only when a step needs them (:meth:`_full`)."""
        try:
            if isinstance(blob, bytes):
                blob = blob.decode()
            parts = blob.split("\n")
            if parts == [FORMAT] or parts == [_FORMAT_2] or parts == [_FORMAT_1]:
                return cls()
            # Every slot is set below: no zero buckets built only to be replaced. (Looked up
            # by name: compiled (see _load_native), the class has no __new__ attribute to
            # compile a call to, and refuses object.__new__.)
            s = getattr(cls, "__new__")(cls)  # noqa: B009
            if len(parts) != 7:
                raise ValueError(f"{len(parts)} parts, not 7")
            header = jsonfast.loads(parts[0])
            if not isinstance(header, list) or not header:
                raise ValueError(f"the header is not a {FORMAT} header")
            shift, tz = 0, 0  # (cw-s2 and cw-s1: UTC days, N the day of last_ts)
            if header[0] == FORMAT and len(header) == 13:
                shift, tz = header[10:12]
                if type(shift) is not int or type(tz) is not int or abs(shift) > 1 or \
                        abs(tz) >= 1440:
                    raise ValueError("the newest day and UTC offset are not small integers")
            if (header[0] == FORMAT and len(header) == 13) or \
                    (header[0] == _FORMAT_2 and len(header) == 11):
                buckets, crc = header[9], header[-1]
                if type(crc) is not int or crc != _blocks_crc(parts[2], parts[3]):
                    raise ValueError("the bucket blocks do not match their checksum")
                if not isinstance(buckets, list) or len(buckets) != 4 * NF or \
                        type(sum(buckets)) is not int:
                    raise ValueError("day N's bucket and the window sums are not 40 integers")
                s._today = buckets[:NF]
                s._sums = [buckets[NF:2 * NF], buckets[2 * NF:3 * NF], buckets[3 * NF:]]
                s._crc = (parts[2], parts[3], crc)
                s._cols = None
                s._adds = _TEXT_ADDS
                s._dc = s._wc = []
                s._used = 0
                s._raw = {1: parts[1], 2: parts[2], 3: parts[3], 4: parts[4]}
            elif header[0] == _FORMAT_1 and len(header) == 9:
                s._dc, daily = _decode_block(parts[2], DAILY_DAYS)
                s._wc, weekly = _decode_block(parts[3], WEEKS)
                s._used = daily | weekly
                s._today = s._sums = s._crc = s._cols = None
                s._adds = 0
                s._raw = {1: parts[1], 3: parts[3], 4: parts[4]}
            else:
                raise ValueError(f"the header is not a {FORMAT} header")
            lt, first, visit, tx, act, comp, first_active, last_days = header[1:9]
            if type(lt) is not int:
                raise ValueError("last_ts is not an integer")
            n = lt // DAY_MS + shift
            s._n, s._tz = n, tz
            s.last_ts = lt
            s.first_ts = None if first is None else lt - int(first)
            s.last_visit = None if visit is None else lt - int(visit)
            s.last_tx = None if tx is None else lt - int(tx)
            s.last_activity = None if act is None else lt - int(act)
            s.last_complaint = None if comp is None else lt - int(comp)
            s._first_active = None if first_active is None else n - int(first_active)
            if type(sum(last_days)) is not int:  # (a string raises TypeError)
                raise ValueError("the newest active days are not integers")
            s._last_days = [n - o for o in reversed(last_days)]
            # (base64.b64decode(x, validate=True), without its Python wrapper)
            s._mask = int.from_bytes(a2b_base64(parts[1], strict_mode=True), "little")
            if s._mask >> RETAIN_DAYS:
                raise ValueError("the bitmap is too long")
            s._refs = {str(ref): ([(int(e[0]), str(e[1]), e[2], e[3]) for e in evs],
                                  (int(base[0]), str(base[1]), str(base[2])) if base else None)
                       for ref, evs, base in jsonfast.loads(parts[4])}
            recent = jsonfast.loads(parts[5])
            for r in recent:
                if not 3 <= len(r) <= 10 or type(r[1]) is not int or type(r[2]) is not str:
                    raise ValueError("a raw event is not a compact row")
                r[1] = lt - r[1]
            s._recent = recent
            s._idb = a2b_base64(parts[6], strict_mode=True)
            if len(s._idb) % _IDR:
                raise ValueError("the id memory is not whole records")
            return s
        except (ValueError, TypeError, KeyError, IndexError, binascii.Error,
                AttributeError) as exc:
            text = blob[:40] if isinstance(blob, str | bytes) else type(blob).__name__
            raise ValueError(f"not an encoded customer summary ({FORMAT}): {exc} "
                             f"[{text!r}]") from None


def return_after_gap(days_ago: Sequence[int], quiet: float,
                     within: int | None = None) -> int | None:
    """Days since the newest return after a silence of at least ``quiet`` days, or None
    (also when it is ``within`` days ago or more: the search stops there). ``days_ago``: the
    newest active days, as days before now, newest first (0 = today).

    The lifecycle's won-back question (services/scoring/lifecycle.py, which exports it): it
    lives here to be compiled with the summary, since the scorer asks it on every step of a
    regular customer whose newest active days span more than ``quiet`` (pure Python, ~1 µs a
    step)."""
    if len(days_ago) < 2 or days_ago[-1] - days_ago[0] < quiet:
        return None  # no gap between them is as long (a regular customer: the usual case)
    for i in range(len(days_ago) - 1):  # (pairs newest first; indexed: compiled, no zip)
        newer = days_ago[i]
        if within is not None and newer >= within:
            return None
        if days_ago[i + 1] - newer >= quiet:
            return newer
    return None


def _row(a: Activity) -> list[Any]:
    """An activity as a compact row: kind code, ts, id, store, amount, channel, status,
    severity, ref, UTC offset in minutes (trailing Nones dropped, an offset of 0 too)."""
    row: list[Any] = [_KIND_CODE.get(a.kind, a.kind), a.ts, a.event_id, a.store_id, a.amount,
                      a.channel, a.status, a.severity, a.complaint_ref, a.tz_minutes or None]
    while row[-1] is None:
        row.pop()
    return row


def _act(r: list[Any]) -> Activity:
    store, amount, channel, status, severity, ref, tz = r[3:] + [None] * (10 - len(r))
    return Activity(_CODE_KIND.get(r[0], r[0]), r[1], r[2], amount, severity, ref, status, store,
                    channel, int(tz) if tz else 0)


def _sorted_median(xs: list[float] | list[int]) -> float:
    """statistics.median of a non-empty list already sorted (the same arithmetic)."""
    k = len(xs)
    h = k // 2
    return xs[h] if k % 2 else (xs[h - 1] + xs[h]) / 2


def _dumps(x: object) -> str:
    """jsonfast.dumps, without its wrapper (a call less on every encode)."""
    return orjson.dumps(x).decode()


def _blocks_crc(daily: str, weekly: str) -> int:
    """The header's checksum of the two bucket blocks (encode writes it, decode checks it)."""
    return zlib.crc32(weekly.encode(), zlib.crc32(daily.encode()))


@lru_cache(maxsize=4096)
def _window_ranges(n: int, now_day: int) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """Which buckets each window (_WINDOW_FIELDS) sums at ``now_day``, day N being ``n``:
    (first daily index, first week index, per window (past its last daily index, past its
    last week index)). Daily index i is day n - i, week index j the week n // 7 - j. Kept
    for the few (n, now_day) a stream reads at: ~1.2 µs to work out, ~0.1 to look up."""
    lag = n - now_day
    i_lo = max(lag, 0)
    nw = n // 7
    # the newest week whose first day is <= now_day, and no newer than the newest week that
    # can hold a bucket (a day that left the daily span, or an event that never entered it)
    w_lo = max(nw - now_day // 7, nw - (n - DAILY_DAYS) // 7)
    # a window's days: 0 <= now_day - day < w; its weeks: those whose first day is inside
    return i_lo, w_lo, tuple((max(min(lag + w, DAILY_DAYS), i_lo), nw - (now_day - w) // 7)
                             for w in _WINDOW_DAYS)


def _bucket_sum(col: Any, lo: int, hi: int) -> int:
    """The buckets ``lo`` .. ``hi - 1`` of one column as a block holds it: a string of count
    characters (their codes less "0"'s) or a list."""
    if type(col) is str:
        seg = col[lo:hi]
        return sum(seg.encode()) - 48 * len(seg)
    return sum(col[lo:hi])


def _week_adds(tail: list[int], day: int, n: int) -> list[tuple[int, int]]:
    """What the daily buckets ``tail`` (``tail[k]`` is day ``day - k``) add to their weeks
    with day N = ``n``: (week index, sum) for each week that gets more than nothing, a week's
    run of days at once, week indices ascending; weeks past the kept ones count nowhere."""
    out = []
    k, size = 0, len(tail)
    while k < size:
        d = day - k
        run = d % 7 + 1  # this day and the older days of its week
        j = n // 7 - d // 7
        if j < WEEKS:
            x = sum(tail[k:k + run])
            if x:
                out.append((j, x))
        k += run
    return out


def _add_to_weeks(week: list[int], tail: list[int], day: int, n: int) -> None:
    """Add the daily buckets ``tail`` (``tail[k]`` is day ``day - k``) into their weeks with
    day N = ``n`` (see :func:`_week_adds`)."""
    for j, x in _week_adds(tail, day, n):
        week[j] += x


def _shift_encoded(money: bool, d: Any, w: Any, t: int, old_n: int, n: int
                   ) -> tuple[Any, Any] | None:
    """One column's daily and weekly block entries (as :meth:`Summary._blocks` reads them)
    after day N moved from ``old_n`` to ``n``, ``t`` its bucket of the old day N: as
    :func:`_encode_block` writes them, or None where a count column is not a string of count
    characters before or after."""
    shift = n - old_n
    wshift = n // 7 - old_n // 7
    if wshift >= WEEKS:  # every old bucket is in a week older than the kept ones
        return "", ""
    gone = shift > DAILY_DAYS - 1  # no old bucket stays in the daily block (N-1 .. N-90)
    tail_day = old_n if gone else old_n - (DAILY_DAYS - shift)  # the day of tail[0]
    moved = _shift_money(d, w, t, shift, wshift, gone) if money else \
        _shift_counts(d, w, t, shift, wshift, gone)
    if moved is None:
        return None
    col, w, tail = moved
    adds = _week_adds(tail, tail_day, n) if tail else None
    if adds:  # into the weeks as written (w ends in a non-zero; so does what adds to it)
        size = adds[-1][0] + 1
        if money:
            week = w + [0] * (size - len(w)) if len(w) < size else w[:]
            for j, x in adds:
                week[j] += x
            w = week
        else:
            chars = bytearray(w.encode().ljust(size, b"0"))
            for j, x in adds:
                c = chars[j] + x
                if c >= 48 + _DIGITS:
                    return None  # a count of 75 or more: a list, the decoded shift's
                chars[j] = c
            w = chars.decode()
    return col or "", w or ""


def _shift_money(d: Any, w: Any, t: int, shift: int, wshift: int, gone: bool
                 ) -> tuple[list[int], list[int], list[int] | None] | None:
    """:func:`_shift_encoded` of an amount column: the daily list, the weekly list shifted,
    and the old buckets that leave the daily block, newest first (``gone``: all of them)."""
    if type(d) is str:  # only "" (empty) is a money column's string
        if d:
            return None
        d = []
    if type(w) is str:
        if w:
            return None
        w = []
    col: list[int] = []
    tail: list[int] | None = None
    if gone:
        if t or d:
            tail = [t] + d
    elif t or d:
        col = [0] * (shift - 1) + [t] + d
        if len(col) > DAILY_DAYS - 1:
            tail = col[DAILY_DAYS - 1:]
            del col[DAILY_DAYS - 1:]
    while col and not col[-1]:
        col.pop()
    if wshift and w:
        w = [0] * wshift + w[:WEEKS - wshift]
        while w and not w[-1]:
            w.pop()
    return col, w, tail


def _shift_counts(d: Any, w: Any, t: int, shift: int, wshift: int, gone: bool
                  ) -> tuple[str, str, list[int] | None] | None:
    """:func:`_shift_money` of a count column written as count characters (None otherwise)."""
    if type(d) is not str or type(w) is not str or t >= _DIGITS:
        return None
    col = ""
    tail: list[int] | None = None
    if gone:
        if t or d:
            tail = [t, *d.encode().translate(_FROM_CHAR)]
    elif t or d:
        col = "0" * (shift - 1) + chr(48 + t) + d
        if len(col) > DAILY_DAYS - 1:
            tail = list(col[DAILY_DAYS - 1:].encode().translate(_FROM_CHAR))
            col = col[:DAILY_DAYS - 1]
        col = col.rstrip("0")
    if wshift and w:
        w = ("0" * wshift + w[:WEEKS - wshift]).rstrip("0")
    return col, w, tail


def _bucket_add(col: Any, k: int, x: int, money: bool) -> Any | None:
    """Column ``col`` as a block holds it ("" when empty, a string of count characters, a
    list) with ``x`` added to its bucket ``k``, as :func:`_encode_block` writes it; None where
    a count would pass the last count character (the block then writes the column as a list:
    the decoded add's)."""
    if type(col) is str and not money:
        size = len(col)
        c = (ord(col[k]) - 48 if k < size else 0) + x
        if c >= _DIGITS:
            return None
        if k < size:
            return col[:k] + chr(48 + c) + col[k + 1:] if x else col
        return col + "0" * (k - size) + chr(48 + c) if c else col
    if type(col) is str:  # a money column's only string is "" (empty)
        if col:
            return None
        col = []
    out = list(col)
    if len(out) <= k:
        out += [0] * (k + 1 - len(out))
    out[k] += x
    while out and not out[-1]:
        out.pop()
    return out or ""


def _trim_columns(cols: list[Any]) -> list[Any]:
    while cols and not cols[-1]:
        cols.pop()
    return cols


def _flat(sums: list[list[int]]) -> list[int]:
    a, b, c = sums
    return a + b + c


_COUNT_OF = {PS: PN, NS: NN}  # a money column is non-zero only where its count column is


def _encode_block(cols: list[list[int]], used: int = (1 << NF) - 1, start: int = 0) -> str:
    """Bucket columns from index ``start`` on, trailing zeros and empty trailing columns
    trimmed. A column of small counts is a string, one character per bucket; others (money)
    are JSON lists. ``used``: the columns that may hold a non-zero value (the others are
    written empty unread)."""
    out: list[str | list[int]] = []
    lengths: dict[int, int] = {}  # count column -> its length with trailing zeros trimmed
    for f, col in enumerate(cols):
        if not used >> f & 1:
            out.append("")
            continue
        if start:
            col = col[start:]
        if f not in _MONEY:
            try:  # counts 0..255 fit in bytes (C speed); anything else raises ValueError
                b = bytes(col).rstrip(b"\0")
            except ValueError:
                b = None
            if b is not None:
                lengths[f] = len(b)
                if not b:
                    out.append("")
                elif max(b) < _DIGITS:
                    out.append(b.translate(_TO_CHAR).decode())
                else:
                    out.append(col[:len(b)])
                continue
        # a money column ends where its count column does; a count column past 255 where its
        # last non-zero bucket is
        end = lengths.get(_COUNT_OF.get(f, -1), len(col))
        if any(col[end:]):  # not where its count column says (a hand-made blob): look
            end = len(col)
        while end and not col[end - 1]:
            end -= 1
        out.append(col[:end] if end else "")
    while out and out[-1] == "":
        out.pop()
    return _dumps(out)


def _column_error(col: Any, room: int) -> str | None:
    """Why ``col`` is not a bucket column :func:`_encode_block` writes for ``room`` buckets
    (a string of count characters or a list of integers, at most ``room`` long), or None."""
    if type(col) is str:
        if len(col) > room:
            return "a bucket column is too long"
        if col.encode().translate(None, _COUNT_BYTES):  # what is left is not a count character
            return "a count column has a character that is not a count"
        return None
    if type(col) is not list or type(sum(col)) is not int:  # floats, strings, None
        return "a bucket column is not integers"
    return "a bucket column is too long" if len(col) > room else None


def _decode_block(text: str, size: int, lead: int = 0) -> tuple[list[list[int]], int]:
    """The columns (each after ``lead`` zeros: the buckets the block leaves out), and a bit per
    column that is not empty (``Summary._used``)."""
    cols = jsonfast.loads(text)
    if not isinstance(cols, list) or len(cols) > NF:
        raise ValueError("a bucket block is not a list of at most 10 columns")
    out: list[list[int]] = []
    used = 0
    room = size - lead
    for f, col in enumerate(cols):
        error = _column_error(col, room)
        if error:
            raise ValueError(error)
        if not col:
            out.append([0] * size)
            continue
        used |= 1 << f
        if isinstance(col, str):
            out.append(list(bytes(lead) + col.encode().translate(_FROM_CHAR).ljust(room, b"\0")))
            continue
        full = [0] * size
        full[lead:lead + len(col)] = col
        out.append(full)
    out += [[0] * size for _ in range(NF - len(out))]
    return out, used


def summarize(activities: Iterable[Activity]) -> Summary:
    """Fold every activity (any order, duplicates by event id ignored) into a new summary."""
    s = Summary.empty()
    for a in activities:
        s.fold(a)
    return s


# ---------------------------------------------------------------------- compiled
NATIVE = False  # True when this module's definitions are the compiled copy's (_load_native)
NATIVE_MODULE = "services.scoring._summary_native"


def _load_native(source: bytes) -> ModuleType | None:
    """The compiled copy of this module that ``make install`` builds (``scripts/native.py``,
    mypyc: the same code, each step about twice as fast), when it is there and was built from
    ``source`` — this file as it is now; None otherwise: the pure Python here runs. A copy
    built from another version is refused with a warning, never run. (Deleting
    ``services/scoring/_summary_native*.so`` runs the pure Python too.)"""
    try:
        mod = importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return None
    if getattr(mod, "_SOURCE_SHA256", None) != sha256(source).hexdigest():
        logging.getLogger(__name__).warning(
            "the compiled customer summary was built from another version of "
            "services/scoring/summary.py: running the pure Python one (`make native` compiles "
            "this one)")
        return None
    return mod


def load_pure() -> ModuleType:
    """This module's pure Python code, loaded afresh as ``churnwatch_summary_pure`` (which
    never takes the compiled definitions): what tests and ``bench.summary_speed`` compare the
    compiled module with."""
    name = "churnwatch_summary_pure"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("summary.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# what stays this module's own when it takes the compiled definitions: the loading itself (the
# copy's functions would read the copy's NATIVE, False, and its __file__, the .so)
_LOADER = frozenset(("NATIVE", "NATIVE_MODULE", "_load_native", "load_pure", "_LOADER"))

if __name__ == "services.scoring.summary":  # not in the compiled copy, nor in load_pure's
    _native = _load_native(Path(__file__).read_bytes())
    if _native is not None:
        globals().update({k: v for k, v in vars(_native).items()
                          if not k.startswith("__") and k not in _LOADER})
        NATIVE = True
