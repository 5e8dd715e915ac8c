"""UTCDateTime on SQLite: its one-step bind gives exactly the text SQLAlchemy's own chain gives (the stored format, by
which stored times compare and which SQLAlchemy parses back), and refuses naive datetimes as the chain does."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import DateTime

from vault.storage.models import UTCDateTime

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _moments() -> list[dt.datetime]:
    rng = random.Random(3)
    fixed = [
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 22, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=SHANGHAI),  # the day before, in UTC
        dt.datetime(9999, 12, 31, 15, 59, 59, tzinfo=SHANGHAI),
    ]
    spread = [
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randrange(2**62 // 1000))
        for _ in range(2000)
    ]
    return fixed + [moment.astimezone(rng.choice((dt.UTC, SHANGHAI))) for moment in spread]


def test_the_sqlite_bind_is_sqlalchemys_text_and_reads_back() -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    read_back = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert ours is not None and theirs is not None and read_back is not None
    for moment in _moments():
        naive_utc = moment.astimezone(dt.UTC).replace(tzinfo=None)
        text = ours(moment)
        assert text == theirs(naive_utc)
        assert UTCDateTime().process_result_value(read_back(text), dialect) == moment
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(dt.datetime(2026, 1, 1))


def test_other_dialects_keep_sqlalchemys_own_chain() -> None:
    dialect = create_engine("postgresql+psycopg://piivault@localhost/piivault").dialect  # never connects
    process: Callable[[dt.datetime], object] | None = UTCDateTime().bind_processor(dialect)
    assert process is not None  # TypeDecorator's: process_bind_param, then the driver takes datetimes as they are
    assert process(dt.datetime(2026, 3, 1, 8, tzinfo=SHANGHAI)) == dt.datetime(2026, 3, 1, 0, 0)
