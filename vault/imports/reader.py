"""Reading channel files: CSV (UTF-8, UTF-8 with BOM, GBK/GB18030) and XLSX, with a column mapping.

Rows come out as dictionaries of vault field names to text; unmapped columns are ignored. Cell values are never
logged or put in an error message.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Common headers of Chinese retail exports, and the vault field each one holds.
DEFAULT_COLUMNS: dict[str, str] = {
    "name": "name",
    "姓名": "name",
    "客户姓名": "name",
    "mobile": "mobile",
    "phone": "mobile",
    "手机": "mobile",
    "手机号": "mobile",
    "手机号码": "mobile",
    "email": "email",
    "邮箱": "email",
    "电子邮件": "email",
    "national_id": "national_id",
    "身份证": "national_id",
    "身份证号": "national_id",
    "birth_date": "birth_date",
    "生日": "birth_date",
    "出生日期": "birth_date",
    "gender": "gender",
    "性别": "gender",
    "address": "address",
    "地址": "address",
    "member_id": "member_id",
    "会员号": "member_id",
    "会员卡号": "member_id",
    "external_id": "external_id",
    "外部编号": "external_id",
    "customer_id": "customer_id",
    "order_id": "order_id",
    "订单号": "order_id",
    "purchase_time": "purchase_time",
    "time": "purchase_time",
    "下单时间": "purchase_time",
    "amount": "amount",
    "金额": "amount",
    "currency": "currency",
    "币种": "currency",
    "store_id": "store_id",
    "门店": "store_id",
    "payment_method": "payment_method",
    "支付方式": "payment_method",
    "coupon": "coupon",
    "优惠券": "coupon",
    "return_of_order_id": "return_of_order_id",
    "sku": "sku",
    "quantity": "quantity",
    "数量": "quantity",
}


class ReadError(Exception):
    """The file cannot be read as a table (the message names the problem, never a cell)."""


@dataclass(frozen=True, slots=True)
class Table:
    columns: dict[str, str]  # header -> field
    rows: Iterator[tuple[int, dict[str, str]]]  # (row number in the file, from 2), fields


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes as such, else GB18030 (a superset of GBK and GB2312)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise ReadError("the file is neither UTF-8 nor GBK/GB18030 text") from None


def _mapping(headers: list[str], overrides: Mapping[str, str], fields: frozenset[str]) -> dict[int, str]:
    by_header = {**DEFAULT_COLUMNS, **overrides}
    mapped: dict[int, str] = {}
    for index, header in enumerate(headers):
        field = by_header.get(header.strip()) or by_header.get(header.strip().lower())
        if field in fields and field not in mapped.values():
            mapped[index] = field
    if not mapped:
        raise ReadError("no column maps to a known field; name them with --map HEADER=FIELD")
    return mapped


def read_table(path: Path, overrides: Mapping[str, str], fields: frozenset[str]) -> Table:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx(path, overrides, fields)
    try:
        text = decode(path.read_bytes())
    except OSError as error:
        raise ReadError(f"cannot read the file ({type(error).__name__})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    headers = next(reader, None)
    if headers is None:
        raise ReadError("the file is empty")
    mapping = _mapping(headers, overrides, fields)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for number, row in enumerate(reader, start=2):
            if any(cell.strip() for cell in row):
                yield number, {field: row[i].strip() for i, field in mapping.items() if i < len(row)}

    return Table({headers[i]: f for i, f in mapping.items()}, rows())


def _xlsx(path: Path, overrides: Mapping[str, str], fields: frozenset[str]) -> Table:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # noqa: BLE001 - openpyxl raises many types for a broken file
        raise ReadError(f"not a readable XLSX file ({type(error).__name__})") from None
    sheet = book.worksheets[0]
    values = sheet.iter_rows(values_only=True)
    headers = [str(cell or "") for cell in next(values, ())]
    if not headers:
        raise ReadError("the first sheet is empty")
    mapping = _mapping(headers, overrides, fields)

    def text(cell: object) -> str:
        if cell is None:
            return ""
        if isinstance(cell, float) and cell.is_integer():
            return str(int(cell))  # phone numbers typed as numbers come back as floats
        if hasattr(cell, "isoformat"):
            return str(cell.isoformat())
        return str(cell).strip()

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for number, row in enumerate(values, start=2):
            cells = list(row)
            if any(text(cell) for cell in cells):
                yield number, {field: text(cells[i]) for i, field in mapping.items() if i < len(cells)}
        book.close()

    return Table({headers[i]: f for i, f in mapping.items()}, rows())
