"""The reference analytics consumer: RFM scores and segments from the pseudonymised export alone (DuckDB).

Input: the purchases file written by ``piivault analytics export`` (CSV or Parquet) and, optionally, its tombstones
file; every pseudonym with a tombstone is dropped before anything is computed. Output per pseudonym: recency (days
since the last purchase, as of a date), frequency (distinct orders, returns excluded), monetary (net amount, returns
subtracted), their quintile scores 1-5 (5 best) and a segment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

SEGMENTS = ("champions", "loyal", "new", "at_risk", "hibernating", "potential")


@dataclass(frozen=True, slots=True)
class Scores:
    pseudonym: str
    recency_days: int
    frequency: int
    monetary: float
    r: int
    f: int
    m: int
    segment: str


def _source(path: Path) -> str:
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv_auto"
    return f"{reader}('{path.as_posix()}')"


def rfm(purchases: Path, tombstones: Path | None = None, as_of: dt.date | None = None) -> list[Scores]:
    connection = duckdb.connect()
    try:
        connection.execute(f"CREATE TABLE purchases AS SELECT * FROM {_source(purchases)}")  # noqa: S608 - a path
        if tombstones is not None and tombstones.exists():
            connection.execute(f"CREATE TABLE gone AS SELECT pseudonym FROM {_source(tombstones)}")  # noqa: S608
        else:
            connection.execute("CREATE TABLE gone (pseudonym VARCHAR)")
        day = as_of or connection.execute("SELECT max(CAST(purchase_time AS DATE)) + 1 FROM purchases").fetchone()[0]  # type: ignore[index]
        rows = connection.execute(
            """
            WITH kept AS (
                SELECT * FROM purchases WHERE pseudonym NOT IN (SELECT pseudonym FROM gone)
            ), per AS (
                SELECT pseudonym,
                       date_diff('day', max(CAST(purchase_time AS DATE)), CAST(? AS DATE)) AS recency_days,
                       count(DISTINCT order_ref) FILTER (WHERE NOT is_return) AS frequency,
                       sum(amount) AS monetary
                FROM kept GROUP BY pseudonym
            ), scored AS (
                SELECT *,
                       ntile(5) OVER (ORDER BY recency_days DESC) AS r,
                       ntile(5) OVER (ORDER BY frequency) AS f,
                       ntile(5) OVER (ORDER BY monetary) AS m
                FROM per
            )
            SELECT pseudonym, recency_days, frequency, monetary, r, f, m,
                   CASE
                       WHEN r >= 4 AND f >= 4 THEN 'champions'
                       WHEN f >= 4 THEN 'loyal'
                       WHEN r >= 4 AND f <= 1 THEN 'new'
                       WHEN r <= 2 AND f >= 3 THEN 'at_risk'
                       WHEN r <= 2 AND f <= 2 THEN 'hibernating'
                       ELSE 'potential'
                   END AS segment
            FROM scored ORDER BY pseudonym
            """,
            [day],
        ).fetchall()
    finally:
        connection.close()
    return [
        Scores(str(p), int(rd), int(fr), float(mo), int(r), int(f), int(m), str(s))
        for p, rd, fr, mo, r, f, m, s in rows
    ]
