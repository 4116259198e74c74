"""Which words of a text are not English: a cheap test for the fields that reach the image model.

Stable Diffusion's text encoders were trained on English captions. A word is taken as another
language's when it has a letter with a diacritic (a few loanwords excepted: café, façade) or is a
function word or common visual noun of Spanish, Portuguese, French, Italian or German that is not
also an English word; characters' names are never counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def word_set(text: str) -> frozenset[str]:
    """The words of a space-separated list."""
    return frozenset(text.split())


# Words of other languages that English prompts do not use (no English word is listed).
FOREIGN_WORDS = word_set(
    # Spanish
    "de el la y en del las los una unas unos para por sobre entre muy sus que años pelo ojos mujer "
    "hombre "
    "negro negra blanco blanca rojo roja verde largo larga corto corta joven viejo vieja noche "
    "cielo luz recogido recogida trenza gafas sombrero abrigo vestido camisa anillo chaqueta "
    "ingeniera ingeniero minas unos treinta cuarenta veinte oscuro oscura claro clara niebla "
    "bajo gris grises cristales túnel invierno cabello barba bigote "
    # Portuguese
    "o os e em um na nas nos ao aos da com uma dos das pela pelas sem muito seu sua cabelo olhar "
    "capa chuva amarela amarelo "
    "curto curta grisalho grisalha preto preta branco vermelho vermelha velho velha jovem "
    "mulher homem noite céu ilha vento terno anel óculos chapéu casaco vestido camisa faroleira "
    "faroleiro trinta quarenta poucos precoce atento atenta escuro escura claro clara barba "
    "composição ótimo ótima desespero falta controle série chega "
    # French
    "les des avec une dans pour cheveux yeux femme homme nuit ciel lumière chapeau manteau "
    "bague lunettes "
    # Italian
    "della dello degli delle capelli occhi donna uomo notte cielo cappello cappotto "
    # German
    "der und mit ein eine einer haare augen frau mann nacht himmel hut kleid"
)
# Letters with diacritics; a few loanwords that English prompts use are allowed.
ACCENTED = re.compile(r"[à-öø-ÿ]", re.IGNORECASE)
ENGLISH_LOANWORDS = frozenset({"café", "cafés", "naïve", "façade", "fiancé", "fiancée", "décor"})
WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*", re.UNICODE)


def words_of(text: str) -> list[str]:
    return WORD.findall(text)


def foreign_words(text: str, names: Iterable[str] = ()) -> list[str]:
    """The words of `text` that are not English (names excepted), in order, each once."""
    kept = {word.lower() for name in names for word in words_of(name)}
    found: dict[str, None] = {}
    for word in words_of(text):
        lower = word.lower()
        if lower in kept or lower.removesuffix("'s") in kept or lower in ENGLISH_LOANWORDS:
            continue
        if lower in FOREIGN_WORDS or ACCENTED.search(word):
            found.setdefault(word)
    return list(found)


# Visible items a description may name, in English and as Spanish, Portuguese and French write
# them: a look that keeps the item has one of the English words.
ITEMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # item: (English words a look may use, words of the description that name it)
    "raincoat": (("raincoat", "rain coat", "mac", "slicker", "oilskin"),
                 ("raincoat", "capa de chuva", "impermeable", "impermeável", "chubasquero",
                  "imperméable")),
    "coat": (("coat", "overcoat", "frock coat", "greatcoat"),
             ("coat", "overcoat", "abrigo", "casaco", "manteau", "sobretudo")),
    "suit": (("suit",), ("suit", "terno", "traje", "costume")),
    "dress": (("dress", "gown"), ("dress", "vestido")),  # not "gown": a dressing gown is none
    "hat": (("hat", "cap", "bonnet", "bowler", "deerstalker", "top hat"),
            ("hat", "sombrero", "chapéu", "chapeau", "gorra", "boné")),
    "ring": (("ring", "signet"), ("ring", "anillo", "anel", "sortija", "bague")),
    "glasses": (("glasses", "spectacles", "pince-nez", "monocle"),
                ("glasses", "spectacles", "gafas", "óculos", "lunettes", "anteojos")),
    "scarf": (("scarf", "shawl"), ("scarf", "bufanda", "cachecol", "écharpe", "lenço")),
    "braid": (("braid", "plait"), ("braid", "plait", "trenza", "trança", "tresse")),
    "beard": (("beard",), ("beard", "barba", "barbe")),
    "moustache": (("moustache", "mustache"), ("moustache", "mustache", "bigote", "bigode")),
    "pipe": (("pipe",), ("pipe", "pipa", "cachimbo")),
    "cane": (("cane", "walking stick"), ("cane", "walking stick", "bastón", "bengala", "canne")),
    "umbrella": (("umbrella",), ("umbrella", "paraguas", "guarda-chuva", "parapluie")),
    "boots": (("boots", "boot"), ("boots", "botas", "bottes")),
    "helmet": (("helmet",), ("helmet", "casco", "capacete", "casque")),
    "lantern": (("lantern", "lamp"), ("lantern", "linterna", "lanterna", "farol", "lanterne")),
    "necklace": (("necklace", "pendant", "locket"), ("necklace", "collar", "colar", "collier")),
    "uniform": (("uniform",), ("uniform", "uniforme")),
}  # fmt: skip


def glossary(text: str) -> dict[str, str]:
    """The ITEMS named in `text` in another language, with the English word for each:
    {"capa de chuva": "raincoat", "anel": "ring"}: a hint for a translation, which a small
    model gets wrong ("umbrella cap")."""
    lower = text.lower()
    found = {}
    for english, named in ITEMS.values():
        for word in named:
            if word not in english and re.search(rf"\b{re.escape(word)}\b", lower):
                found.setdefault(word, english[0])
    return found


STOP_WORDS = word_set(
    "a an the of on in at with and or to for from by into onto over under his her their its "
    "is are as that this"
)


def content_words(text: str) -> set[str]:
    return {w.lower() for w in words_of(text) if w.lower() not in STOP_WORDS and len(w) > 1}


def overlap(first: str, second: str) -> float:
    """The share of words two prompts have in common (Jaccard over content words)."""
    a, b = content_words(first), content_words(second)
    return len(a & b) / len(a | b) if a | b else 0.0


def described_items(description: str) -> list[str]:
    """The ITEMS that `description` names, in any of their languages."""
    text = description.lower()
    named = [
        item
        for item, (_, words) in ITEMS.items()
        if any(re.search(rf"\b{re.escape(word)}\b", text) for word in words)
    ]
    return _without_general(named)


def _without_general(items: list[str]) -> list[str]:
    """A raincoat is a coat: a lost raincoat is not also a lost coat."""
    return [i for i in items if not (i == "coat" and "raincoat" in items)]
