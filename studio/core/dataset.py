"""The series schema: loading, validation and column mapping.

A series is a folder holding `episodes.csv` (and optionally `seasons.csv`, `characters.csv` and a
`series.json` with the series' `title`), one
JSON file with `episodes`, `seasons` and `characters` lists, or a single episodes CSV. Fields:
episodes `season, episode, title, summary, characters`; seasons `season, title, summary`;
characters `name, description`. `mapping` renames other column names to these, in every table;
a mapped column that no table has is an error. CSV files may separate columns with `,` `;` tab or
`|` (found from the header line), in the encodings spreadsheets write (UTF-8, with or without a
BOM, UTF-16 with a BOM, or Windows-1252), with decimal commas in number columns (`1,0`). Bad rows
are reported with file, line and reason and skipped, a row whose quote is never closed among them
(the lines it ran over are read on their own); over-long texts are cut (at a sentence end where
there is one) and their rows kept, with a warning. Loading fails only when no episode is usable.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio.core.config import setting
from studio.core.errors import DatasetError

FIELDS = {
    "episodes": ("season", "episode", "title", "summary", "characters"),
    "seasons": ("season", "title", "summary"),
    "characters": ("name", "description"),
}
REQUIRED = {
    "episodes": ("season", "episode", "summary"),
    "seasons": ("season",),
    "characters": ("name",),
}
MAX_LENGTH = {"title": 200, "summary": 4000, "description": 1000, "name": 120, "characters": 1000}
# Over MAX_LENGTH these fields are cut (where to cut, best first) and the row kept; a name is an
# identity (episodes' character lists refer to it), so a row whose name is too long is skipped.
CUT_AT = {"summary": "sentence", "description": "sentence", "title": "word", "characters": "name"}
ABSURD_LENGTH = 100_000  # longer than this is no summary: the row is skipped, not cut
DELIMITERS = (",", ";", "\t", "|")  # ties go to the first
MAX_SEASON = 1000
MAX_EPISODE = 10000
# What a field's undecodable bytes are, by the encoding its file was read in.
NOT_DECODABLE = {
    "UTF-8": "bytes that are not UTF-8",
    "cp1252": "bytes that are neither UTF-8 nor Windows-1252 (cp1252)",
    "UTF-16": "bytes that are not UTF-16",
}


@dataclass(frozen=True)
class Character:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Episode:
    season: int
    episode: int
    title: str
    summary: str
    characters: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"S{self.season:02d}E{self.episode:02d}"


@dataclass(frozen=True)
class Season:
    season: int
    title: str = ""
    summary: str = ""  # empty: the prompt is written from the episodes' summaries

    @property
    def id(self) -> str:
        return f"S{self.season:02d}"


@dataclass(frozen=True)
class RowIssue:
    """A problem in one row of the series data.

    `skipped`: the row was left out; otherwise the row was kept with a text shortened.
    `str()` says which: "skipped episodes.csv:3: missing season number" or
    "shortened episodes.csv:6: summary is 5000 characters long, ...".
    """

    file: str
    line: int
    reason: str
    skipped: bool = True

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{'skipped' if self.skipped else 'shortened'} {self.where}: {self.reason}"


@dataclass
class Series:
    title: str
    seasons: dict[int, Season]
    episodes: list[Episode]
    characters: dict[str, Character] = field(default_factory=dict)

    def episodes_of(self, season: int) -> list[Episode]:
        return [e for e in self.episodes if e.season == season]

    def characters_of(self, episode: Episode) -> list[Character]:
        """The episode's characters, with descriptions where the characters table has them."""
        return [self.characters.get(name, Character(name)) for name in episode.characters]

    def ranked_characters(self, season: int | None = None) -> list[str]:
        """Every character's name, the most important first: by the number of episodes (of
        `season`, or of the series) they are in, then the characters table's order, then first
        appearance. Prompts drop the descriptors of the least important first."""
        episodes = self.episodes if season is None else self.episodes_of(season)
        order = list(
            dict.fromkeys([*self.characters, *(n for e in self.episodes for n in e.characters)])
        )
        counts = {name: 0 for name in order}
        for episode in episodes:
            for name in dict.fromkeys(episode.characters):
                counts[name] += 1
        return sorted(
            order, key=lambda name: (-counts[name], name not in self.characters, order.index(name))
        )

    def episodes_with(self, name: str) -> list[Episode]:
        return [e for e in self.episodes if name in e.characters]

    def season_summary(self, season: int) -> str:
        """The season's own summary, or its episodes' summaries joined when it has none."""
        own = self.seasons[season].summary
        if own:
            return own
        return " ".join(f"{e.title}: {e.summary}" for e in self.episodes_of(season))


@dataclass(frozen=True)
class _Row:
    file: str
    line: int
    values: dict[str, str]
    encoding: str  # what its file was read as, to say which bytes are bad


@dataclass(frozen=True)
class _Record:
    line: int  # where the row starts, from 1
    cells: list[str]
    error: str = ""  # why the row cannot be read; the lines it ran over are read on their own


@dataclass
class _Table:
    label: str  # as issues name it: "episodes.csv", "show.json episodes"
    name: str  # episodes, seasons or characters
    columns: list[str]  # as the file names them, before the mapping
    rows: list[_Row]


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`["summary=resumo"]` -> `{"resumo": "summary"}` (source column -> schema field)."""
    known = {name for names in FIELDS.values() for name in names}
    mapping: dict[str, str] = {}
    for pair in pairs:
        schema_field, sep, column = pair.partition("=")
        schema_field, column = schema_field.strip(), column.strip()
        if not sep or not schema_field or not column:
            raise DatasetError(f"--map takes FIELD=COLUMN, e.g. summary=resumo, but got {pair!r}.")
        if schema_field not in known:
            raise DatasetError(
                f"--map {pair!r}: {schema_field!r} is not a schema field; fields: {sorted(known)}."
            )
        mapping[column] = schema_field
    return mapping


def _decode(path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was read as, decided for the whole file.

    A byte order mark says UTF-8 or UTF-16 (LE or BE). Without one: UTF-8 when the bytes are
    UTF-8, or when at least as many of its non-ASCII characters are valid UTF-8 as not (a UTF-8
    file with a bad row); otherwise Windows-1252, what Excel writes in Western locales.
    Undecodable bytes become lone surrogates, so each row holding some is reported on its own.
    """
    text, encoding = _decode_bytes(path, path.read_bytes())
    return text.removeprefix("\ufeff"), encoding  # a second BOM, as some writers add one


def _decode_bytes(path: Path, raw: bytes) -> tuple[str, str]:
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8) :].decode("utf-8", "surrogateescape"), "UTF-8"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16", "surrogatepass"), "UTF-16"
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path} starts with a UTF-16 byte order mark but is not UTF-16 ({exc.reason} "
                f"at byte {exc.start}); save it again, as UTF-8 or UTF-16."
            ) from None
    try:
        return raw.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
    bad = sum(1 for ch in text if _is_bad(ch))
    if bad <= sum(1 for ch in text if ch > "\x7f") - bad:
        return text, "UTF-8"
    return raw.decode("cp1252", "surrogateescape"), "cp1252"


def _is_bad(ch: str) -> bool:
    # No decoded text holds a lone surrogate: they stand for bytes that could not be decoded.
    return "\ud800" <= ch <= "\udfff"


def _has_bad_bytes(text: str) -> bool:
    return any(_is_bad(ch) for ch in text)


def _delimiter(header: str) -> str:
    """The one of DELIMITERS that splits the header line into the most columns, quotes respected."""
    header = header.rstrip("\r\n")
    best, most = DELIMITERS[0], 1
    for candidate in DELIMITERS:
        try:
            count = len(next(csv.reader([header], delimiter=candidate), []))
        except csv.Error:
            continue
        if count > most:
            best, most = candidate, count
    return best


def _lines(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _quote_error(lines: list[str], first: int, delimiter: str) -> str:
    """Why a row read over several lines, from line `first`, is not well quoted ("" if it is).

    A quoted cell may hold line breaks, but one whose quote is never closed, or is closed in
    mid-cell, runs on over the rows after it: a strict reading of the row's lines tells.
    """
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error as exc:
        taken = _lines(first + 1, first + len(lines) - 1)
        if "unexpected end of data" in str(exc):
            cause = "an unclosed quote runs to the end of the file"
        else:
            cause = (
                f"a quoted cell runs on until a quote ends it mid-cell on line "
                f"{first + reader.line_num - 1}"
            )
        return (
            f"{cause}, taking {taken} with it: the row is skipped and the lines it took are read "
            "on their own (close the quote; a quote inside a quoted cell is written twice)"
        )
    return ""


def _records(lines: list[str], delimiter: str) -> Iterator[_Record]:
    """The CSV rows of `lines`, each with the line it starts on.

    No line is lost without a word: a row that cannot be read (above all one whose quote is
    never closed, which takes the rows after it into one cell) comes back with its `error`, and
    reading starts again on the line after its first, so the rows it ran over are read too.
    """
    start = 0  # the line (from 0) the current reader started on
    while start < len(lines):
        reader = csv.reader(itertools.islice(lines, start, None), delimiter=delimiter)
        first = start  # the line (from 0) the next row starts on
        for cells in reader:
            end = start + reader.line_num
            error = _quote_error(lines[first:end], first + 1, delimiter) if end > first + 1 else ""
            if error:
                yield _Record(first + 1, [], error)
                start = first + 1
                break
            yield _Record(first + 1, cells)
            first = end
        else:
            return


def _csv_table(path: Path, table: str) -> _Table:
    text, encoding = _decode(path)
    # The csv module refuses a cell over a process-wide limit (131,072 characters by default),
    # which would stop the whole file at one long cell; no cell is longer than the file. The
    # limit only ever goes up, so other readers in the process are not cut short.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    lines = io.StringIO(text, newline="").readlines()
    if not lines:
        raise DatasetError(f"{path} is empty: it needs a header row and data rows.")
    records = _records(lines, _delimiter(lines[0]))
    first = next(records)
    if first.error:
        raise DatasetError(f"{path}: its header line cannot be read: {first.error}.")
    header = [h.strip() for h in first.cells]
    rows = []
    for record in records:
        if record.error:
            values = {"__error__": record.error}
        elif not any(c.strip() for c in record.cells):
            continue
        elif len(record.cells) > len(header):
            values = {"__error__": f"{len(record.cells)} cells for {len(header)} columns"}
        else:
            values = dict(zip(header, record.cells, strict=False))
        rows.append(_Row(path.name, record.line, values, encoding))
    return _Table(path.name, table, header, rows)


def _check_columns(file: str, table: str, columns: list[str]) -> None:
    missing = [name for name in REQUIRED[table] if name not in columns]
    if missing:
        raise DatasetError(
            f"{file} has no column {missing[0]!r} (its columns: {', '.join(columns)}); "
            f"name the column that holds it with --map {missing[0]}=COLUMN."
        )


def _json_table(path: Path, data: dict[str, Any], table: str, encoding: str) -> _Table:
    items = data.get(table, [])
    if not isinstance(items, list):
        raise DatasetError(f"{path.name}: {table!r} has to be a list of objects.")
    label = f"{path.name} {table}"
    rows = []
    columns: dict[str, None] = {}  # in order of first appearance
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            rows.append(_Row(label, index, {"__error__": "not an object"}, encoding))
            continue
        values = {}
        for key, value in item.items():
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            values[str(key)] = "" if value is None else str(value)
        columns.update(dict.fromkeys(values))
        rows.append(_Row(label, index, values, encoding))
    return _Table(label, table, list(columns), rows)


def _check_mapping(tables: list[_Table], mapping: dict[str, str]) -> None:
    """A mapped column that no table has is a typo: say so, with the columns there are."""
    found = {column for table in tables for column in table.columns}
    missing = [column for column in mapping if column not in found]
    if not missing:
        return
    pairs = ", ".join(f"--map {mapping[column]}={column}" for column in missing)
    names = " or ".join(repr(column) for column in missing)
    have = "; ".join(
        f"{table.label} has: {', '.join(table.columns)}" for table in tables if table.columns
    )
    raise DatasetError(
        f"{pairs}: no table has a column {names} ({have or 'no table has any column'}); "
        "write COLUMN exactly as the file names it."
    )


def _mapped_rows(table: _Table, mapping: dict[str, str]) -> list[_Row]:
    """The table's rows with their columns renamed to schema fields; checks the required ones."""
    if table.columns or table.rows:
        columns = [mapping.get(c, c) for c in table.columns]
        _check_columns(table.label, table.name, columns)
    if not mapping:
        return table.rows
    return [
        replace(row, values={mapping.get(k, k): v for k, v in row.values.items()})
        for row in table.rows
    ]


_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def _int(value: str, name: str, maximum: int) -> int:
    text = value.strip()
    if not text:
        raise ValueError(f"missing {name} number")
    number_text = text
    if _DECIMAL_COMMA.fullmatch(text):  # spreadsheets in many locales write 1.0 as "1,0"
        whole, fraction = text.split(",")
        if len(fraction) == 3:
            raise ValueError(
                f"{name} number {text!r} is ambiguous: {whole} with a decimal comma, or "
                f"{whole}{fraction} with a thousands separator; write it without the comma"
            )
        number_text = f"{whole}.{fraction}"
    try:
        number = float(number_text)  # spreadsheets write 3 as "3.0"
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise ValueError(f"{name} number {text!r} is not a whole number")
    number = int(number)
    if not 1 <= number <= maximum:
        raise ValueError(f"{name} number {number} is out of range 1..{maximum}")
    return number


_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)\]]*(?= )")


def _cut(text: str, limit: int, unit: str) -> tuple[str, str]:
    """`text` (single-spaced) cut to at most `limit` characters, and where it was cut.

    `unit` "sentence": after the last sentence end, when that keeps at least half the limit;
    "name": before the last name separator; otherwise, and as a fall-back, at the last word
    boundary, with "…" to show the text goes on.
    """
    head = text[: limit + 1]
    if unit == "sentence":
        ends = [match.end() for match in _SENTENCE_END.finditer(head)]
        if ends and ends[-1] >= limit // 2:
            return text[: ends[-1]], "at the end of a sentence"
    if unit == "name":
        end = head.rfind(";" if ";" in text else ",")
        if end > 0:
            return text[:end].rstrip(), "after the last whole name that fits"
    space = text.rfind(" ", 0, limit)
    if space > 0:
        return text[:space].rstrip(",;:-–—") + "…", "at a word boundary"
    return text[: limit - 1] + "…", "mid-word (it has no spaces)"


def _text(row: _Row, name: str, notes: list[str], required: bool = False) -> str:
    """The field's text, single-spaced; an over-long one is cut, with a note in `notes`."""
    text = " ".join((row.values.get(name) or "").split())
    if _has_bad_bytes(text):
        raise ValueError(
            f"bad encoding in {name}: {NOT_DECODABLE[row.encoding]} (save the file as UTF-8)"
        )
    if required and not text:
        raise ValueError(f"empty {name}")
    limit = MAX_LENGTH[name]
    if len(text) <= limit:
        return text
    if len(text) > ABSURD_LENGTH:
        raise ValueError(
            f"{name} is {len(text)} characters long, over {ABSURD_LENGTH}: that is no {name}; "
            "in a CSV an unclosed quote joins the rows after it into one cell (check the quotes)"
        )
    if name not in CUT_AT:
        raise ValueError(f"{name} is {len(text)} characters long; the limit is {limit}")
    cut, where = _cut(text, limit, CUT_AT[name])
    notes.append(
        f"{name} is {len(text)} characters long, over the limit of {limit}: cut to {len(cut)} "
        f"{where}; the row is kept (shorten the text in the file to choose the cut yourself)"
    )
    return cut


def _split_names(text: str) -> tuple[str, ...]:
    separator = ";" if ";" in text else ","
    return tuple(dict.fromkeys(n.strip() for n in text.split(separator) if n.strip()))


def _kept(row: _Row, notes: list[str], issues: list[RowIssue]) -> None:
    issues.extend(RowIssue(row.file, row.line, note, skipped=False) for note in notes)


def _parse_episodes(rows: list[_Row], issues: list[RowIssue]) -> list[Episode]:
    episodes: list[Episode] = []
    seen: dict[tuple[int, int], _Row] = {}
    for row in rows:
        notes: list[str] = []
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            season = _int(row.values.get("season", ""), "season", MAX_SEASON)
            number = _int(row.values.get("episode", ""), "episode", MAX_EPISODE)
            summary = _text(row, "summary", notes, required=True)
            title = _text(row, "title", notes) or f"Episode {number}"
            characters = _split_names(_text(row, "characters", notes))
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if (season, number) in seen:
            first = seen[(season, number)]
            issues.append(
                RowIssue(
                    row.file,
                    row.line,
                    f"duplicate episode S{season:02d}E{number:02d} (first at line {first.line})",
                )
            )
            continue
        seen[(season, number)] = row
        _kept(row, notes, issues)
        episodes.append(Episode(season, number, title, summary, characters))
    return sorted(episodes, key=lambda e: (e.season, e.episode))


def _parse_seasons(
    rows: list[_Row], with_episodes: set[int], issues: list[RowIssue]
) -> dict[int, Season]:
    """The seasons table's seasons that have episodes (in `with_episodes`); the rest reported."""
    seasons: dict[int, Season] = {}
    lines: dict[int, int] = {}
    for row in rows:
        notes: list[str] = []
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            number = _int(row.values.get("season", ""), "season", MAX_SEASON)
            title = _text(row, "title", notes)
            season = Season(number, title, _text(row, "summary", notes))
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if number in lines:
            issues.append(
                RowIssue(
                    row.file, row.line, f"duplicate season {number} (first at line {lines[number]})"
                )
            )
            continue
        lines[number] = row.line
        if number not in with_episodes:
            issues.append(RowIssue(row.file, row.line, f"season {number} has no episodes"))
            continue
        _kept(row, notes, issues)
        seasons[number] = season
    return seasons


def _parse_characters(rows: list[_Row], issues: list[RowIssue]) -> dict[str, Character]:
    characters: dict[str, Character] = {}
    for row in rows:
        notes: list[str] = []
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            name = _text(row, "name", notes, required=True)
            description = _text(row, "description", notes)
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if name in characters:
            issues.append(RowIssue(row.file, row.line, f"duplicate character {name!r}"))
            continue
        _kept(row, notes, issues)
        characters[name] = Character(name, description)
    return characters


def _folder_title(path: Path) -> str:
    """The title in the folder's optional series.json, else the folder's name."""
    manifest = path / "series.json"
    if manifest.is_file():
        try:
            title = json.loads(manifest.read_text(encoding="utf-8")).get("title")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise DatasetError(
                f'{manifest} has to be a JSON object like {{"title": "..."}}.'
            ) from None
        if title:
            return str(title)
    return path.name


def _read_tables(path: Path) -> tuple[str, list[_Table]]:
    if path.is_dir():
        episodes = path / "episodes.csv"
        if not episodes.is_file():
            raise DatasetError(
                f"{path} has no episodes.csv; a series folder holds episodes.csv and optionally "
                "seasons.csv and characters.csv."
            )
        tables = [_csv_table(episodes, "episodes")]
        for table in ("seasons", "characters"):
            if (path / f"{table}.csv").is_file():
                tables.append(_csv_table(path / f"{table}.csv", table))
        return _folder_title(path), tables
    if path.suffix.lower() == ".json":
        try:
            text, encoding = _decode(path)
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "episodes" not in data:
            raise DatasetError(f"{path} has to be a JSON object with an 'episodes' list.")
        return str(data.get("title") or path.stem), [
            _json_table(path, data, t, encoding) for t in FIELDS
        ]
    if path.suffix.lower() in {".csv", ".tsv", ".txt"}:
        return path.stem, [_csv_table(path, "episodes")]
    raise DatasetError(f"{path}: expected a folder, a .json file or an episodes .csv file.")


def load_series(
    path: Path | str, mapping: dict[str, str] | None = None
) -> tuple[Series, list[RowIssue]]:
    """Load and validate a series; returns it with the report of skipped and shortened rows."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(
            f"Series data not found at {path}; set {setting('series')} to a folder, JSON or CSV."
        )
    mapping = mapping or {}
    title, read = _read_tables(path)
    _check_mapping(read, mapping)
    tables = {table.name: _mapped_rows(table, mapping) for table in read}
    issues: list[RowIssue] = []
    episodes = _parse_episodes(tables["episodes"], issues)
    seasons = _parse_seasons(tables.get("seasons", []), {e.season for e in episodes}, issues)
    characters = _parse_characters(tables.get("characters", []), issues)
    if not episodes:
        skipped = [f"{i.where}: {i.reason}" for i in issues if i.skipped]
        detail = "; ".join(skipped[:5]) or "the episodes table has no rows"
        raise DatasetError(f"No usable episode in {path}: {detail}.")
    for number in sorted({e.season for e in episodes} - set(seasons)):
        seasons[number] = Season(number, f"Season {number}")
    return Series(title, dict(sorted(seasons.items())), episodes, characters), issues
