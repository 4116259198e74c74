import json

import pytest

from studio.config import SAMPLE_SERIES
from studio.dataset import load_series, parse_mapping
from studio.errors import DatasetError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_sample_series_is_complete():
    series, issues = load_series(SAMPLE_SERIES)
    assert issues == []
    assert series.title == "Sherlock Holmes"
    assert len(series.episodes) >= 20
    assert set(series.seasons) == {1, 2}
    assert "Sherlock Holmes" in series.characters
    assert all(e.summary and e.characters for e in series.episodes)


def test_bad_rows_are_reported_with_file_line_and_reason_and_the_rest_loads(tmp_path):
    folder = tmp_path / "show"
    folder.mkdir()
    write(
        folder / "episodes.csv",
        "season,episode,title,summary,characters\n"
        "1,1,Pilot,A storm hits the harbour town.,Ana; Rui\n"
        ",2,No season,Something happens.,Ana\n"
        "1,3,Empty,,Ana\n"
        "1,1,Again,A duplicate of the pilot.,Ana\n"
        f"1,4,Long,{'x' * 5000},Ana\n"
        "1,five,Words,Not a number.,Ana\n"
        '1,6,"Multi\nline title","A summary that is fine.",Rui\n',
    )
    series, issues = load_series(folder)
    assert [e.episode for e in series.episodes] == [1, 6]
    reasons = {issue.line: issue.reason for issue in issues}
    assert all(issue.file == "episodes.csv" for issue in issues)
    assert reasons[3] == "missing season number"
    assert reasons[4] == "empty summary"
    assert "duplicate episode S01E01 (first at line 2)" in reasons[5]
    assert "5000 characters long" in reasons[6]
    assert "not a whole number" in reasons[7]
    assert series.episodes[1].title == "Multi line title"


def test_bad_encoding_is_reported_per_row(tmp_path):
    csv_path = write(
        tmp_path / "eps.csv",
        b"season,episode,title,summary\n1,1,Ok,Fine summary here.\n1,2,Bad,Caf\xe9 in Lisbon.\n",
    )
    series, issues = load_series(csv_path)
    assert [e.id for e in series.episodes] == ["S01E01"]
    assert issues[0].line == 3 and "not UTF-8" in issues[0].reason


def test_mapping_renames_columns_in_every_table(tmp_path):
    folder = tmp_path / "serie"
    folder.mkdir()
    write(
        folder / "episodes.csv",
        "temporada,episodio,titulo,resumo,personagens\n"
        "1,1,Piloto,Uma tempestade atinge a cidade.,Ana; Rui\n",
    )
    write(folder / "seasons.csv", "temporada,titulo,resumo\n1,Primeira,\n")
    write(folder / "characters.csv", "nome,descricao\nAna,Pescadora de cabelo curto.\n")
    mapping = parse_mapping(
        [
            "season=temporada",
            "episode=episodio",
            "title=titulo",
            "summary=resumo",
            "characters=personagens",
            "name=nome",
            "description=descricao",
        ]
    )
    series, issues = load_series(folder, mapping)
    assert issues == []
    assert series.episodes[0].title == "Piloto"
    assert series.characters["Ana"].description == "Pescadora de cabelo curto."
    # A season without a summary gets one from its episodes.
    assert "Uma tempestade" in series.season_summary(1)


def test_missing_column_says_how_to_map_it(tmp_path):
    csv_path = write(tmp_path / "eps.csv", "temporada,episodio,resumo\n1,1,Algo.\n")
    with pytest.raises(DatasetError, match=r"no column 'season'.*--map season=COLUMN"):
        load_series(csv_path)


def test_bad_map_argument():
    with pytest.raises(DatasetError, match="FIELD=COLUMN"):
        parse_mapping(["summary"])
    with pytest.raises(DatasetError, match="not a schema field"):
        parse_mapping(["plot=resumo"])


def test_json_series_with_lists(tmp_path):
    path = tmp_path / "show.json"
    path.write_text(
        json.dumps(
            {
                "title": "Harbour",
                "seasons": [{"season": 1, "title": "One", "summary": "A town by the sea."}],
                "episodes": [
                    {
                        "season": 1,
                        "episode": 1,
                        "title": "Pilot",
                        "summary": "Storm.",
                        "characters": ["Ana"],
                    },
                    {"season": 1, "episode": 2, "title": "Empty", "summary": ""},
                ],
                "characters": [{"name": "Ana", "description": "A fisher."}],
            }
        )
    )
    series, issues = load_series(path)
    assert series.title == "Harbour"
    assert series.episodes[0].characters == ("Ana",)
    assert [(i.file, i.line, i.reason) for i in issues] == [
        ("show.json episodes", 2, "empty summary")
    ]


def test_nothing_usable_fails_with_the_reasons(tmp_path):
    csv_path = write(tmp_path / "eps.csv", "season,episode,summary\n1,1,\n")
    with pytest.raises(DatasetError, match="No usable episode.*empty summary"):
        load_series(csv_path)


def test_missing_path():
    with pytest.raises(DatasetError, match="not found"):
        load_series("/nonexistent/show")
