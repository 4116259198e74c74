"""The series schema: loading, validation and column mapping.

A series is a folder holding `episodes.csv` (and optionally `seasons.csv`, `characters.csv` and a
`series.json` with the series' `title`), one
JSON file with `episodes`, `seasons` and `characters` lists, or a single episodes CSV. Fields:
episodes `season, episode, title, summary, characters`; seasons `season, title, summary`;
characters `name, description`. `mapping` renames other column names to these, in every table.
Bad rows are reported with file, line and reason and skipped; loading fails only when no episode
is usable.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import DatasetError

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
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


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


def _csv_rows(path: Path, table: str, mapping: dict[str, str]) -> Iterator[_Row]:
    text = _decode(path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path} is empty: it needs a header row and data rows.") from None
    header = [mapping.get(h.strip(), h.strip()) for h in header]
    _check_columns(path.name, table, header)
    line = reader.line_num + 1
    for cells in reader:
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            yield _Row(
                path.name, start, {"__error__": f"{len(cells)} cells for {len(header)} columns"}
            )
            continue
        yield _Row(path.name, start, dict(zip(header, cells, strict=False)))


def _check_columns(file: str, table: str, columns: list[str]) -> None:
    missing = [name for name in REQUIRED[table] if name not in columns]
    if missing:
        raise DatasetError(
            f"{file} has no column {missing[0]!r} (its columns: {', '.join(columns)}); "
            f"name the column that holds it with --map {missing[0]}=COLUMN."
        )


def _json_rows(path: Path, data: dict[str, Any], table: str, mapping: dict[str, str]) -> list[_Row]:
    items = data.get(table, [])
    if not isinstance(items, list):
        raise DatasetError(f"{path.name}: {table!r} has to be a list of objects.")
    rows = []
    columns: set[str] = set()
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            rows.append(_Row(f"{path.name} {table}", index, {"__error__": "not an object"}))
            continue
        values = {}
        for key, value in item.items():
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            values[mapping.get(key, key)] = "" if value is None else str(value)
        columns.update(values)
        rows.append(_Row(f"{path.name} {table}", index, values))
    if rows:
        _check_columns(f"{path.name} {table}", table, sorted(columns))
    return rows


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


def _text(values: dict[str, str], name: str, required: bool = False) -> str:
    text = " ".join((values.get(name) or "").split())
    if _has_bad_bytes(text):
        raise ValueError(
            f"bad encoding in {name}: bytes that are not UTF-8 (save the file as UTF-8)"
        )
    if required and not text:
        raise ValueError(f"empty {name}")
    if len(text) > MAX_LENGTH[name]:
        raise ValueError(f"{name} is {len(text)} characters long; the limit is {MAX_LENGTH[name]}")
    return text


def _split_names(text: str) -> tuple[str, ...]:
    separator = ";" if ";" in text else ","
    return tuple(dict.fromkeys(n.strip() for n in text.split(separator) if n.strip()))


def _parse_episodes(rows: list[_Row], issues: list[RowIssue]) -> list[Episode]:
    episodes: list[Episode] = []
    seen: dict[tuple[int, int], _Row] = {}
    for row in rows:
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            season = _int(row.values.get("season", ""), "season", MAX_SEASON)
            number = _int(row.values.get("episode", ""), "episode", MAX_EPISODE)
            summary = _text(row.values, "summary", required=True)
            title = _text(row.values, "title") or f"Episode {number}"
            characters = _split_names(_text(row.values, "characters"))
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if (season, number) in seen:
            first = seen[(season, number)]
            issues.append(
                RowIssue(
                    row.file,
                    row.line,
                    f"duplicate episode S{season:02d}E{number:02d} "
                    f"(first at line {first.line}); this row is skipped",
                )
            )
            continue
        seen[(season, number)] = row
        episodes.append(Episode(season, number, title, summary, characters))
    return sorted(episodes, key=lambda e: (e.season, e.episode))


def _parse_seasons(rows: list[_Row], issues: list[RowIssue]) -> dict[int, Season]:
    seasons: dict[int, Season] = {}
    lines: dict[int, int] = {}
    for row in rows:
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            number = _int(row.values.get("season", ""), "season", MAX_SEASON)
            season = Season(number, _text(row.values, "title"), _text(row.values, "summary"))
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if number in seasons:
            issues.append(
                RowIssue(
                    row.file,
                    row.line,
                    f"duplicate season {number} "
                    f"(first at line {lines[number]}); this row is skipped",
                )
            )
            continue
        seasons[number], lines[number] = season, row.line
    return seasons


def _parse_characters(rows: list[_Row], issues: list[RowIssue]) -> dict[str, Character]:
    characters: dict[str, Character] = {}
    for row in rows:
        try:
            if "__error__" in row.values:
                raise ValueError(row.values["__error__"])
            name = _text(row.values, "name", required=True)
            description = _text(row.values, "description")
        except ValueError as exc:
            issues.append(RowIssue(row.file, row.line, str(exc)))
            continue
        if name in characters:
            issues.append(RowIssue(row.file, row.line, f"duplicate character {name!r}; skipped"))
            continue
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


def _read_tables(path: Path, mapping: dict[str, str]) -> tuple[str, dict[str, list[_Row]]]:
    if path.is_dir():
        episodes = path / "episodes.csv"
        if not episodes.is_file():
            raise DatasetError(
                f"{path} has no episodes.csv; a series folder holds episodes.csv and optionally "
                "seasons.csv and characters.csv."
            )
        tables = {"episodes": list(_csv_rows(episodes, "episodes", mapping))}
        for table in ("seasons", "characters"):
            if (path / f"{table}.csv").is_file():
                tables[table] = list(_csv_rows(path / f"{table}.csv", table, mapping))
        return _folder_title(path), tables
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(_decode(path.read_bytes()))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "episodes" not in data:
            raise DatasetError(f"{path} has to be a JSON object with an 'episodes' list.")
        tables = {t: _json_rows(path, data, t, mapping) for t in FIELDS}
        return str(data.get("title") or path.stem), tables
    if path.suffix.lower() in {".csv", ".tsv", ".txt"}:
        return path.stem, {"episodes": list(_csv_rows(path, "episodes", mapping))}
    raise DatasetError(f"{path}: expected a folder, a .json file or an episodes .csv file.")


def load_series(
    path: Path | str, mapping: dict[str, str] | None = None
) -> tuple[Series, list[RowIssue]]:
    """Load and validate a series; returns it with the report of skipped rows."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(
            f"Series data not found at {path}; pass --data with a folder, JSON or CSV."
        )
    title, tables = _read_tables(path, mapping or {})
    issues: list[RowIssue] = []
    episodes = _parse_episodes(tables["episodes"], issues)
    seasons = _parse_seasons(tables.get("seasons", []), issues)
    characters = _parse_characters(tables.get("characters", []), issues)
    if not episodes:
        detail = "; ".join(str(i) for i in issues[:5]) or "the episodes table has no rows"
        raise DatasetError(f"No usable episode in {path}: {detail}.")
    for number in sorted({e.season for e in episodes} - set(seasons)):
        seasons[number] = Season(number, f"Season {number}")
    for number in sorted(set(seasons) - {e.season for e in episodes}):
        issues.append(RowIssue("seasons", number, f"season {number} has no episodes; skipped"))
        del seasons[number]
    return Series(title, dict(sorted(seasons.items())), episodes, characters), issues
