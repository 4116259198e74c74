"""The series schema: loading, validation and column mapping.

A series is a folder holding `episodes.csv` (and optionally `seasons.csv`, `characters.csv` and a
`series.json` with the series' `title`), one
JSON file with `episodes`, `seasons` and `characters` lists, or a single episodes CSV. Fields:
episodes `season, episode, title, summary, characters`; seasons `season, title, summary`;
characters `name, description`. `mapping` renames other column names to these, in every table;
a mapped column that no table has is an error. CSV files may separate columns with `,` `;` tab or
`|` (found from the header line). Bad rows are reported with file, line and reason and skipped;
over-long texts are cut (at a sentence end where there is one) and their rows kept, with a
warning. Loading fails only when no episode is usable.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
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


def _decode(raw: bytes) -> str:
    # Undecodable bytes become lone surrogates, so each bad row can be reported on its own.
    return raw.decode("utf-8-sig", errors="surrogateescape")


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _delimiter(text: str) -> str:
    """The one of DELIMITERS that splits the header line into the most columns, quotes respected."""
    header = text.partition("\n")[0].rstrip("\r")
    best, most = DELIMITERS[0], 1
    for candidate in DELIMITERS:
        try:
            count = len(next(csv.reader([header], delimiter=candidate), []))
        except csv.Error:
            continue
        if count > most:
            best, most = candidate, count
    return best


def _csv_table(path: Path, table: str) -> _Table:
    text = _decode(path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{path} is empty: it needs a header row and data rows.") from None
    rows = []
    line = reader.line_num + 1
    for cells in reader:
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            error = f"{len(cells)} cells for {len(header)} columns"
            rows.append(_Row(path.name, start, {"__error__": error}))
            continue
        rows.append(_Row(path.name, start, dict(zip(header, cells, strict=False))))
    return _Table(path.name, table, header, rows)


def _check_columns(file: str, table: str, columns: list[str]) -> None:
    missing = [name for name in REQUIRED[table] if name not in columns]
    if missing:
        raise DatasetError(
            f"{file} has no column {missing[0]!r} (its columns: {', '.join(columns)}); "
            f"name the column that holds it with --map {missing[0]}=COLUMN."
        )


def _json_table(path: Path, data: dict[str, Any], table: str) -> _Table:
    items = data.get(table, [])
    if not isinstance(items, list):
        raise DatasetError(f"{path.name}: {table!r} has to be a list of objects.")
    label = f"{path.name} {table}"
    rows = []
    columns: dict[str, None] = {}  # in order of first appearance
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            rows.append(_Row(label, index, {"__error__": "not an object"}))
            continue
        values = {}
        for key, value in item.items():
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            values[str(key)] = "" if value is None else str(value)
        columns.update(dict.fromkeys(values))
        rows.append(_Row(label, index, values))
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
        _Row(row.file, row.line, {mapping.get(k, k): v for k, v in row.values.items()})
        for row in table.rows
    ]


def _int(value: str, name: str, maximum: int) -> int:
    text = value.strip()
    if not text:
        raise ValueError(f"missing {name} number")
    try:
        number = float(text)  # spreadsheets write 3 as "3.0"
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


def _text(values: dict[str, str], name: str, notes: list[str], required: bool = False) -> str:
    """The field's text, single-spaced; an over-long one is cut, with a note in `notes`."""
    text = " ".join((values.get(name) or "").split())
    if _has_bad_bytes(text):
        raise ValueError(
            f"bad encoding in {name}: bytes that are not UTF-8 (save the file as UTF-8)"
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
            summary = _text(row.values, "summary", notes, required=True)
            title = _text(row.values, "title", notes) or f"Episode {number}"
            characters = _split_names(_text(row.values, "characters", notes))
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


def _parse_seasons(rows: list[_Row], issues: list[RowIssue]) -> dict[int, Season]:
    seasons: dict[int, Season] = {}
    lines: dict[int, int] = {}
    for row in rows:
        notes: list[str] = []
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            number = _int(row.values.get("season", ""), "season", MAX_SEASON)
            title = _text(row.values, "title", notes)
            season = Season(number, title, _text(row.values, "summary", notes))
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if number in seasons:
            issues.append(
                RowIssue(
                    row.file, row.line, f"duplicate season {number} (first at line {lines[number]})"
                )
            )
            continue
        _kept(row, notes, issues)
        seasons[number], lines[number] = season, row.line
    return seasons


def _parse_characters(rows: list[_Row], issues: list[RowIssue]) -> dict[str, Character]:
    characters: dict[str, Character] = {}
    for row in rows:
        notes: list[str] = []
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            name = _text(row.values, "name", notes, required=True)
            description = _text(row.values, "description", notes)
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
            data = json.loads(_decode(path.read_bytes()))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "episodes" not in data:
            raise DatasetError(f"{path} has to be a JSON object with an 'episodes' list.")
        return str(data.get("title") or path.stem), [_json_table(path, data, t) for t in FIELDS]
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
    seasons = _parse_seasons(tables.get("seasons", []), issues)
    characters = _parse_characters(tables.get("characters", []), issues)
    if not episodes:
        skipped = [f"{i.where}: {i.reason}" for i in issues if i.skipped]
        detail = "; ".join(skipped[:5]) or "the episodes table has no rows"
        raise DatasetError(f"No usable episode in {path}: {detail}.")
    for number in sorted({e.season for e in episodes} - set(seasons)):
        seasons[number] = Season(number, f"Season {number}")
    for number in sorted(set(seasons) - {e.season for e in episodes}):
        issues.append(RowIssue("seasons", number, f"season {number} has no episodes"))
        del seasons[number]
    return Series(title, dict(sorted(seasons.items())), episodes, characters), issues
