import json

import pytest

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import ABSURD_LENGTH, MAX_LENGTH, RowIssue, load_series, parse_mapping
from studio.core.errors import DatasetError


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
    # The over-long summary (line 6) is cut and its row kept; the other bad rows are skipped.
    assert [e.episode for e in series.episodes] == [1, 4, 6]
    reasons = {issue.line: issue.reason for issue in issues}
    assert all(issue.file == "episodes.csv" for issue in issues)
    assert [i.line for i in issues if i.skipped] == [3, 4, 5, 7]
    assert reasons[3] == "missing season number"
    assert reasons[4] == "empty summary"
    assert "duplicate episode S01E01 (first at line 2)" in reasons[5]
    assert "5000 characters long" in reasons[6]
    assert "not a whole number" in reasons[7]
    assert series.episodes[2].title == "Multi line title"


def test_bad_encoding_is_reported_per_row(tmp_path):
    # A UTF-8 file (its first row says so) with one row pasted from a cp1252 file: that row is
    # reported, the rest loads. (A file whose only non-ASCII bytes are cp1252 is read as cp1252.)
    csv_path = write(
        tmp_path / "eps.csv",
        "season,episode,title,summary\n1,1,Ok,Café at the harbour.\n".encode()
        + b"1,2,Bad,Caf\xe9 in Lisbon.\n",
    )
    series, issues = load_series(csv_path)
    assert [e.id for e in series.episodes] == ["S01E01"]
    assert series.episodes[0].summary == "Café at the harbour."
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


# --- CSV delimiters ----------------------------------------------------------------------------


def test_semicolon_csv_with_commas_in_the_text(tmp_path):
    # Excel in European locales writes `;`; the commas inside summaries are not separators, and a
    # quoted header name with more commas than the header has semicolons does not fool it.
    csv_path = write(
        tmp_path / "episodios.csv",
        '"title, as broadcast, in full, in its language, with number, if any";'
        "season;episode;summary;characters\n"
        "Pilot;1;1;A storm, then a flood, hits the town.;Ana, Rui\n"
        '"Two; the return";1;2;"She comes back; nobody, not even Rui, knows why.";Ana\n',
    )
    series, issues = load_series(
        csv_path,
        parse_mapping(["title=title, as broadcast, in full, in its language, with number, if any"]),
    )
    assert issues == []
    first, second = series.episodes
    assert (first.title, first.summary) == ("Pilot", "A storm, then a flood, hits the town.")
    assert first.characters == ("Ana", "Rui")
    assert second.title == "Two; the return"
    assert second.summary == "She comes back; nobody, not even Rui, knows why."


def test_comma_csv_with_semicolons_in_quoted_text(tmp_path):
    csv_path = write(
        tmp_path / "eps.csv",
        "season,episode,title,summary,characters\n"
        '1,1,"Storm; flood","Rain; wind; then the sea comes in.","Ana; Rui; Eva"\n'
        '1,2,Calm,"After the storm; quiet.",Ana;Rui\n',
    )
    series, issues = load_series(csv_path)
    assert issues == []
    first, second = series.episodes
    assert first.title == "Storm; flood"
    assert first.summary == "Rain; wind; then the sea comes in."
    assert first.characters == ("Ana", "Rui", "Eva")
    assert second.characters == ("Ana", "Rui")


@pytest.mark.parametrize("delimiter", ["\t", "|"])
def test_tab_and_pipe_separated_files(tmp_path, delimiter):
    lines = [["season", "episode", "summary"], ["1", "1", "A storm, then; a flood."]]
    text = "".join(delimiter.join(cells) + "\r\n" for cells in lines)
    series, issues = load_series(write(tmp_path / "eps.tsv", text))
    assert issues == []
    assert series.episodes[0].summary == "A storm, then; a flood."


# --- --map checks --------------------------------------------------------------------------------


def test_map_to_a_column_no_csv_has_names_the_pair_and_the_columns(tmp_path):
    folder = tmp_path / "show"
    folder.mkdir()
    write(folder / "episodes.csv", "season,episode,summary\n1,1,A storm.\n")
    write(folder / "characters.csv", "nome,descricao\nAna,A fisher.\n")
    mapping = parse_mapping(["name=nome", "summary=nonexistent"])
    with pytest.raises(DatasetError) as error:
        load_series(folder, mapping)
    message = str(error.value)
    assert message.startswith("--map summary=nonexistent: no table has a column 'nonexistent' (")
    assert "episodes.csv has: season, episode, summary" in message
    assert "characters.csv has: nome, descricao" in message
    assert "name=nome" not in message  # that column exists, in characters.csv


def test_map_check_comes_before_the_missing_column_advice(tmp_path):
    # Without the check, the error would say to --map summary=COLUMN, which the user just did.
    csv_path = write(tmp_path / "eps.csv", "temporada;episodio;resumo\n1;1;Algo.\n")
    mapping = parse_mapping(["season=temporada", "episode=episodio", "summary=Resumo"])
    with pytest.raises(DatasetError, match=r"--map summary=Resumo: .*eps\.csv has: .*resumo"):
        load_series(csv_path, mapping)


def test_map_to_a_missing_json_key(tmp_path):
    path = tmp_path / "show.json"
    path.write_text(json.dumps({"episodes": [{"season": 1, "episode": 1, "summary": "Storm."}]}))
    with pytest.raises(DatasetError) as error:
        load_series(path, parse_mapping(["title=titulo", "description=descricao"]))
    assert str(error.value).startswith(
        "--map title=titulo, --map description=descricao: "
        "no table has a column 'titulo' or 'descricao' (show.json episodes has: season, episode, "
        "summary)"
    )


# --- over-long texts -----------------------------------------------------------------------------


def sentences(count):
    return " ".join(
        f"Sentence {n} of a detailed synopsis, with some words in it." for n in range(count)
    )


def test_long_summary_is_cut_at_a_sentence_end_and_the_row_kept(tmp_path):
    summary = sentences(120)  # about 7,000 characters
    csv_path = write(
        tmp_path / "eps.csv",
        f'season,episode,title,summary\n1,1,Pilot,"{summary}"\n1,2,Next,Short.\n',
    )
    series, issues = load_series(csv_path)
    assert [e.episode for e in series.episodes] == [1, 2]
    kept = series.episodes[0].summary
    assert MAX_LENGTH["summary"] // 2 <= len(kept) <= MAX_LENGTH["summary"]
    assert summary.startswith(kept) and kept.endswith("words in it.")
    [issue] = issues
    assert (issue.file, issue.line, issue.skipped) == ("eps.csv", 2, False)
    assert f"summary is {len(summary)} characters long" in issue.reason
    assert f"cut to {len(kept)} at the end of a sentence" in issue.reason
    assert str(issue).startswith("shortened eps.csv:2: summary is ")
    assert "the row is kept" in str(issue)


def test_long_text_without_a_late_sentence_end_is_cut_at_a_word(tmp_path):
    summary = "One short sentence. " + " ".join(["word"] * 1500)  # no sentence end after it
    path = tmp_path / "show.json"
    path.write_text(json.dumps({"episodes": [{"season": 1, "episode": 1, "summary": summary}]}))
    series, issues = load_series(path)
    kept = series.episodes[0].summary
    assert len(kept) <= MAX_LENGTH["summary"] and len(kept) > MAX_LENGTH["summary"] - 10
    assert kept.endswith("word…")
    assert "at a word boundary" in issues[0].reason and not issues[0].skipped


def test_absurdly_long_summary_is_skipped(tmp_path):
    summary = "A word. " * (ABSURD_LENGTH // 8 + 1)
    path = tmp_path / "show.json"
    episodes = [
        {"season": 1, "episode": 1, "summary": summary},
        {"season": 1, "episode": 2, "summary": "Fine."},
    ]
    path.write_text(json.dumps({"episodes": episodes}))
    series, issues = load_series(path)
    assert [e.episode for e in series.episodes] == [2]
    [issue] = issues
    assert issue.skipped and issue.line == 1
    assert "unclosed quote" in issue.reason
    assert str(issue).startswith("skipped show.json episodes:1: summary is ")


def test_other_long_texts_are_cut_but_a_long_name_still_skips_its_row(tmp_path):
    folder = tmp_path / "show"
    folder.mkdir()
    names = "; ".join(f"Character number {n}" for n in range(80))  # about 1,700 characters
    title = " ".join(["Title"] * 60)  # 359 characters
    write(
        folder / "episodes.csv",
        f'season,episode,title,summary,characters\n1,1,{title},A storm.,"{names}"\n',
    )
    write(folder / "seasons.csv", f'season,title,summary\n1,One,"{sentences(80)}"\n')
    write(
        folder / "characters.csv",
        f'name,description\nAna,"{sentences(30)}"\n{"N" * 200},A fisher.\n',
    )
    series, issues = load_series(folder)
    episode = series.episodes[0]
    assert len(episode.title) <= MAX_LENGTH["title"] and episode.title.endswith("Title…")
    assert len("; ".join(episode.characters)) <= MAX_LENGTH["characters"]
    assert episode.characters[:2] == ("Character number 0", "Character number 1")
    assert all(name.startswith("Character number ") for name in episode.characters)
    assert series.seasons[1].summary.endswith("words in it.")
    assert len(series.seasons[1].summary) <= MAX_LENGTH["summary"]
    assert series.characters["Ana"].description.endswith("words in it.")
    assert len(series.characters["Ana"].description) <= MAX_LENGTH["description"]
    assert set(series.characters) == {"Ana"}
    shortened = [(i.file, i.reason.split()[0]) for i in issues if not i.skipped]
    assert shortened == [
        ("episodes.csv", "title"),
        ("episodes.csv", "characters"),
        ("seasons.csv", "summary"),
        ("characters.csv", "description"),
    ]
    [skipped] = [i for i in issues if i.skipped]
    assert (skipped.file, skipped.line) == ("characters.csv", 3)
    assert "name is 200 characters long; the limit is 120" in skipped.reason


def test_a_skipped_row_reports_no_shortening(tmp_path):
    csv_path = write(
        tmp_path / "eps.csv",
        f'season,episode,summary\n1,1,Fine.\nx,2,"{sentences(120)}"\n1,1,"{sentences(120)}"\n',
    )
    _, issues = load_series(csv_path)
    assert [(i.line, i.skipped) for i in issues] == [(3, True), (4, True)]


def test_row_issue_reads_well_either_way():
    assert RowIssue("eps.csv", 3, "empty summary").skipped
    assert str(RowIssue("eps.csv", 3, "empty summary")) == "skipped eps.csv:3: empty summary"
    shortened = RowIssue("eps.csv", 4, "summary is 5000 characters long", skipped=False)
    assert str(shortened) == "shortened eps.csv:4: summary is 5000 characters long"


# --- what spreadsheets write: encodings, separators, decimal commas -----------------------------


EXCEL_EPISODES = (
    "temporada;episódio;título;resumo;personagens\r\n"
    "1,0;1;Café;À beira-mar, uma tempestade chega à vila.;João, Inês\r\n"
    "1;2,0;Ação;Pão, vinho e um segredo.;Inês\r\n"
    "1,5;3;Meio;Uma temporada que não existe.;João\r\n"
    "1;1,000;Mil;Mil ou um?;João\r\n"
)
PT_MAPPING = [
    "season=temporada",
    "episode=episódio",
    "title=título",
    "summary=resumo",
    "characters=personagens",
]


def test_excel_cp1252_semicolons_and_decimal_commas(tmp_path):
    folder = tmp_path / "série"
    folder.mkdir()
    write(folder / "episodes.csv", EXCEL_EPISODES, "cp1252")
    write(folder / "seasons.csv", "temporada;título\r\n1,0;Verão\r\n", "cp1252")
    series, issues = load_series(folder, parse_mapping(PT_MAPPING))
    assert [(e.id, e.title) for e in series.episodes] == [("S01E01", "Café"), ("S01E02", "Ação")]
    assert series.episodes[0].summary == "À beira-mar, uma tempestade chega à vila."
    assert series.episodes[0].characters == ("João", "Inês")
    assert series.seasons[1].title == "Verão"
    assert [(i.file, i.line, i.skipped) for i in issues] == [
        ("episodes.csv", 4, True),
        ("episodes.csv", 5, True),
    ]
    assert issues[0].reason == "season number '1,5' is not a whole number"
    assert "'1,000' is ambiguous: 1 with a decimal comma, or 1000 with a thousands" in (
        issues[1].reason
    )


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-8"),
        lambda text: text.encode("utf-8-sig"),
        lambda text: text.encode("utf-16"),  # BOM, then the machine's byte order
        lambda text: ("\ufeff" + text).encode("utf-16"),  # as a writer adding its own BOM
        lambda text: ("\ufeff" + text).encode("utf-16-le"),
        lambda text: ("\ufeff" + text).encode("utf-16-be"),
        lambda text: text.encode("cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16", "utf-16-two-boms", "utf-16-le", "utf-16-be", "cp1252"],
)
def test_unicode_text_exports_in_every_encoding(tmp_path, encode):
    # Excel's "Unicode text" is UTF-16 with a BOM, tab-separated.
    text = (
        "season\tepisode\ttitle\tsummary\r\n"
        "1\t1\tCafé\tÀ beira-mar; a storm, then “calm”.\r\n"
        "1\t2\tNo accent\tPlain.\r\n"
    )
    series, issues = load_series(write(tmp_path / "eps.txt", encode(text)))
    assert issues == []
    assert [(e.title, e.summary) for e in series.episodes] == [
        ("Café", "À beira-mar; a storm, then “calm”."),
        ("No accent", "Plain."),
    ]


def test_encoding_is_decided_per_file_so_a_cp1252_file_loses_no_row(tmp_path):
    csv_path = write(
        tmp_path / "eps.csv",
        b"season,episode,title,summary\n1,1,Ok,Fine summary here.\n1,2,Caf\xe9,In Lisbon.\n",
    )
    series, issues = load_series(csv_path)
    assert issues == []
    assert [e.title for e in series.episodes] == ["Ok", "Café"]


def test_bytes_no_encoding_knows_are_reported_per_row(tmp_path):
    # 0x81 is not a character in cp1252 either.
    csv_path = write(
        tmp_path / "eps.csv",
        b"season;episode;summary\n1;1;Caf\xe9.\n1;2;Bad \x81 byte.\n",
    )
    series, issues = load_series(csv_path)
    assert [e.summary for e in series.episodes] == ["Café."]
    [issue] = issues
    assert issue.line == 3 and "neither UTF-8 nor Windows-1252" in issue.reason


def test_broken_utf16_says_so(tmp_path):
    path = write(tmp_path / "eps.txt", ("season\tepisode\tsummary\r\n").encode("utf-16") + b"x")
    with pytest.raises(DatasetError, match="byte order mark but is not UTF-16"):
        load_series(path)


def test_json_in_cp1252_and_utf16(tmp_path):
    data = {"episodes": [{"season": "1,0", "episode": 1, "summary": "À beira-mar."}]}
    for encoding in ("cp1252", "utf-16"):
        path = write(tmp_path / f"{encoding}.json", json.dumps(data, ensure_ascii=False), encoding)
        series, issues = load_series(path)
        assert issues == [] and series.episodes[0].summary == "À beira-mar."


# --- rows the CSV reader cannot read -------------------------------------------------------------


def test_a_cell_over_the_csv_field_limit_is_reported_and_the_rest_loads(tmp_path):
    summary = "A word, then another. " * 7000  # 154,000 characters, over csv's 131,072
    csv_path = write(
        tmp_path / "eps.csv",
        f'season,episode,title,summary\n1,1,Long,"{summary}"\n1,2,Fine,Short.\n',
    )
    series, issues = load_series(csv_path)
    assert [e.episode for e in series.episodes] == [2]
    [issue] = issues
    assert (issue.line, issue.skipped) == (2, True)
    assert f"summary is {len(summary.strip())} characters long, over {ABSURD_LENGTH}" in (
        issue.reason
    )


def test_an_unclosed_quote_is_reported_and_the_rows_it_took_are_read(tmp_path):
    csv_path = write(
        tmp_path / "eps.csv",
        "season,episode,title,summary,characters\n"
        '1,1,Oops,"An unclosed quote summary,A\n'
        "1,2,Fine,Summary two,A\n"
        "1,3,Three,Summary three,A\n",
    )
    series, issues = load_series(csv_path)
    assert [(e.episode, e.summary) for e in series.episodes] == [
        (2, "Summary two"),
        (3, "Summary three"),
    ]
    [issue] = issues
    assert str(issue).startswith(
        "skipped eps.csv:2: an unclosed quote runs to the end of the file, taking lines 3-4 with "
        "it: the row is skipped and the lines it took are read on their own"
    )


def test_a_quote_closed_mid_cell_on_a_later_line_is_reported(tmp_path):
    # The quote opened on line 2 is closed by the one opening line 3's summary.
    csv_path = write(
        tmp_path / "eps.csv",
        "season,episode,title,summary\n"
        '1,1,Oops,"Unclosed\n'
        '1,2,Fine,"Summary two"\n'
        "1,3,Three,Summary three\n",
    )
    series, issues = load_series(csv_path)
    assert [e.episode for e in series.episodes] == [2, 3]
    [issue] = issues
    assert issue.line == 2
    assert issue.reason.startswith(
        "a quoted cell runs on until a quote ends it mid-cell on line 3, taking line 3 with it"
    )


def test_a_header_with_an_unclosed_quote_fails_with_the_reason(tmp_path):
    csv_path = write(tmp_path / "eps.csv", 'season,episode,"summary\n1,1,A storm.\n')
    with pytest.raises(DatasetError, match="header line cannot be read: an unclosed quote"):
        load_series(csv_path)


# --- seasons -------------------------------------------------------------------------------------


def test_a_season_without_episodes_is_named_in_words(tmp_path):
    folder = tmp_path / "show"
    folder.mkdir()
    write(folder / "episodes.csv", "season,episode,summary\n1,1,A storm.\n")
    write(folder / "seasons.csv", "season,title\n1,One\n2,Two\n")
    series, issues = load_series(folder)
    assert set(series.seasons) == {1}
    assert [str(issue) for issue in issues] == ["skipped seasons.csv:3: season 2 has no episodes"]
