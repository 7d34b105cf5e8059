"""Language metadata for reporting results per language family and distance from English.

One `LanguageInfo` per language code used by a task in `tasks/` (the XTREME and XTREME-R
languages, English, and the four synthetic languages of the embedded default). Used by
`xstilts.analysis.questions` to group per-language gains; pure data, no imports beyond `tasks`.

Sources (written from general linguistic knowledge, not copied): the family is the top-level
genealogical unit as in Glottolog 4 (glottolog.org), except that Niger-Congo is used for Swahili
and Yoruba, as in WALS, where Glottolog says Atlantic-Congo; `branch` is the genus or major
branch as in WALS (wals.info, Dryer & Haspelmath 2013) or Glottolog's first subgroup; `script`
is the usual script of the XTREME data.

`distance` is a deliberately coarse bucket, from genealogy alone (no typological feature vector):
  source   English, the language every zero-shot target is trained on;
  close    Germanic and Romance languages: same family, Latin script, centuries of lexical contact;
  medium   other Indo-European languages (Slavic, Greek, Indo-Iranian) and the French-based
           Haitian Creole: related, mostly another script;
  distant  every other family.
The synthetic languages are bucketed by their designed vocabulary overlap with English
(`xstilts.tasks.synthetic.SHARED_FRACTION`: near 70 %, mid 30 %, far 0 % and verb-final).
"""
from __future__ import annotations

from dataclasses import dataclass

from xstilts.tasks.synthetic import SHARED_FRACTION, VERB_FINAL

DISTANCE_BUCKETS = ("source", "close", "medium", "distant")  # in order of distance from English
UNKNOWN = "unknown"


@dataclass(frozen=True)
class LanguageInfo:
    code: str  # as the tasks name it (ISO 639-1, or the synthetic names)
    name: str
    family: str
    branch: str
    script: str
    distance: str  # one of DISTANCE_BUCKETS
    vocabulary_overlap: float | None = None  # synthetic languages only: share of English content words


_IE = "Indo-European"


def _table(rows: str, family: str, distance: str) -> dict[str, LanguageInfo]:
    """`code|name|branch|script` lines, all of one family and distance bucket."""
    found = {}
    for line in rows.strip().splitlines():
        code, name, branch, script = (part.strip() for part in line.split("|"))
        found[code] = LanguageInfo(code, name, family, branch, script, distance)
    return found


LANGUAGES: dict[str, LanguageInfo] = {
    "en": LanguageInfo("en", "English", _IE, "Germanic", "Latin", "source"),
    **_table("""
        af | Afrikaans  | Germanic | Latin
        de | German     | Germanic | Latin
        nl | Dutch      | Germanic | Latin
        fr | French     | Romance  | Latin
        es | Spanish    | Romance  | Latin
        it | Italian    | Romance  | Latin
        pt | Portuguese | Romance  | Latin
        ro | Romanian   | Romance  | Latin
    """, _IE, "close"),
    **_table("""
        ru | Russian   | Slavic  | Cyrillic
        uk | Ukrainian | Slavic  | Cyrillic
        bg | Bulgarian | Slavic  | Cyrillic
        pl | Polish    | Slavic  | Latin
        el | Greek     | Greek   | Greek
        hi | Hindi     | Indic   | Devanagari
        mr | Marathi   | Indic   | Devanagari
        ur | Urdu      | Indic   | Arabic
        bn | Bengali   | Indic   | Bengali
        fa | Persian   | Iranian | Arabic
    """, _IE, "medium"),
    "ht": LanguageInfo("ht", "Haitian Creole", "Creole (French-based)", "Creoles and Pidgins", "Latin", "medium"),
    **_table("""
        ar | Arabic | Semitic | Arabic
        he | Hebrew | Semitic | Hebrew
    """, "Afro-Asiatic", "distant"),
    **_table("""
        zh | Chinese | Sinitic      | Han
        my | Burmese | Burmese-Lolo | Myanmar
    """, "Sino-Tibetan", "distant"),
    "ja": LanguageInfo("ja", "Japanese", "Japonic", "Japanese", "Han + kana", "distant"),
    "ko": LanguageInfo("ko", "Korean", "Koreanic", "Korean", "Hangul", "distant"),
    **_table("""
        tr | Turkish | Turkic | Latin
        kk | Kazakh  | Turkic | Cyrillic
    """, "Turkic", "distant"),
    **_table("""
        et | Estonian  | Finnic | Latin
        fi | Finnish   | Finnic | Latin
        hu | Hungarian | Ugric  | Latin
    """, "Uralic", "distant"),
    "eu": LanguageInfo("eu", "Basque", "Basque (isolate)", "Basque", "Latin", "distant"),
    "ka": LanguageInfo("ka", "Georgian", "Kartvelian", "Kartvelian", "Georgian", "distant"),
    **_table("""
        ta | Tamil     | Southern Dravidian       | Tamil
        ml | Malayalam | Southern Dravidian       | Malayalam
        te | Telugu    | South-Central Dravidian  | Telugu
    """, "Dravidian", "distant"),
    "th": LanguageInfo("th", "Thai", "Tai-Kadai", "Kam-Tai", "Thai", "distant"),
    "vi": LanguageInfo("vi", "Vietnamese", "Austroasiatic", "Viet-Muong", "Latin", "distant"),
    **_table("""
        id | Indonesian | Malayo-Polynesian | Latin
        ms | Malay      | Malayo-Polynesian | Latin
        jv | Javanese   | Malayo-Polynesian | Latin
        tl | Tagalog    | Malayo-Polynesian | Latin
    """, "Austronesian", "distant"),
    **_table("""
        sw | Swahili | Bantoid | Latin
        yo | Yoruba  | Defoid  | Latin
    """, "Niger-Congo", "distant"),
    "qu": LanguageInfo("qu", "Quechua", "Quechuan", "Quechuan", "Latin", "distant"),
}


def _synthetic(code: str) -> LanguageInfo:
    overlap = SHARED_FRACTION[code]
    distance = "close" if overlap >= 0.5 else "medium" if overlap > 0 and code not in VERB_FINAL else "distant"
    order = "SOV" if code in VERB_FINAL else "SVO"
    return LanguageInfo(code, f"synthetic {code} ({overlap:.0%} English words, {order})", "Synthetic",
                        f"synthetic {order}", "Latin", distance, overlap)


LANGUAGES.update({code: _synthetic(code) for code in SHARED_FRACTION if code != "en"})


def language_info(code: str) -> LanguageInfo:
    """The language's metadata; a language this table does not know gets family/branch/distance
    "unknown" (a report still shows it, in its own group)."""
    found = LANGUAGES.get(code)
    return found if found is not None else LanguageInfo(code, code, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)


def family_of(code: str) -> str:
    return language_info(code).family


def distance_of(code: str) -> str:
    return language_info(code).distance


def distance_rank(bucket: str) -> int:
    """Sort key of a distance bucket (unknown last)."""
    return DISTANCE_BUCKETS.index(bucket) if bucket in DISTANCE_BUCKETS else len(DISTANCE_BUCKETS)
