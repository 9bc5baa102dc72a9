"""Language codes: their names, how they compare, and which ones a job may ask for.

Standard library only (besides the error type), so the UI, the CLI and the remote clients check
codes exactly as the engine does.
"""

from __future__ import annotations

import re

from engine.protocol import SubtideError

# Every code Whisper takes for the spoken language ("jw" is Whisper's own code for Javanese).
_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw "
    "he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt "
    "my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl "
    "tr tt uk ur uz vi yi yo zh yue"
)
WHISPER_LANGUAGES: tuple[str, ...] = tuple(_WHISPER_CODES.split())
# Regional and script variants people often translate into; any region or known script of a
# known language is accepted, these are the ones offered first.
TARGET_VARIANTS: tuple[str, ...] = ("es-419", "fr-CA", "pt-BR", "zh-Hans", "zh-Hant")

_LANGUAGES = {
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "as": "Assamese",
    "az": "Azerbaijani",
    "ba": "Bashkir",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bo": "Tibetan",
    "br": "Breton",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fil": "Filipino",
    "fo": "Faroese",
    "fr": "French",
    "gl": "Galician",
    "gu": "Gujarati",
    "ha": "Hausa",
    "haw": "Hawaiian",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "ht": "Haitian Creole",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "jw": "Javanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "ko": "Korean",
    "la": "Latin",
    "lb": "Luxembourgish",
    "ln": "Lingala",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mg": "Malagasy",
    "mi": "Maori",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "mt": "Maltese",
    "my": "Burmese",
    "nb": "Norwegian Bokmål",
    "ne": "Nepali",
    "nl": "Dutch",
    "nn": "Norwegian Nynorsk",
    "no": "Norwegian",
    "oc": "Occitan",
    "pa": "Punjabi",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sa": "Sanskrit",
    "sd": "Sindhi",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sn": "Shona",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "su": "Sundanese",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "tg": "Tajik",
    "th": "Thai",
    "tk": "Turkmen",
    "tl": "Tagalog",
    "tr": "Turkish",
    "tt": "Tatar",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "yi": "Yiddish",
    "yo": "Yoruba",
    "yue": "Cantonese",
    "zh": "Chinese",
}
# ISO 639-1 -> ISO 639-2/B (the code Matroska and MP4 tag a track with) and the language's own
# name, which a player shows as the track's title ("Deutsch", not "German").
_ISO_639_2 = """
af afr Afrikaans|am amh አማርኛ|ar ara العربية|as asm অসমীয়া|az aze Azərbaycan|ba bak Башҡорт|
be bel Беларуская|bg bul Български|bn ben বাংলা|bo tib བོད་སྐད|br bre Brezhoneg|bs bos Bosanski|
ca cat Català|cs cze Čeština|cy wel Cymraeg|da dan Dansk|de ger Deutsch|el gre Ελληνικά|
en eng English|es spa Español|et est Eesti|eu baq Euskara|fa per فارسی|fi fin Suomi|
fil fil Filipino|fo fao Føroyskt|fr fre Français|gl glg Galego|gu guj ગુજરાતી|ha hau Hausa|
haw haw ʻŌlelo Hawaiʻi|he heb עברית|hi hin हिन्दी|hr hrv Hrvatski|ht hat Kreyòl ayisyen|
hu hun Magyar|hy arm Հայերեն|id ind Bahasa Indonesia|is ice Íslenska|it ita Italiano|
ja jpn 日本語|jw jav Basa Jawa|jv jav Basa Jawa|ka geo ქართული|kk kaz Қазақ тілі|km khm ខ្មែរ|
kn kan ಕನ್ನಡ|ko kor 한국어|la lat Latina|lb ltz Lëtzebuergesch|ln lin Lingála|lo lao ລາວ|
lt lit Lietuvių|lv lav Latviešu|mg mlg Malagasy|mi mao Māori|mk mac Македонски|ml mal മലയാളം|
mn mon Монгол|mr mar मराठी|ms may Bahasa Melayu|mt mlt Malti|my bur မြန်မာ|nb nob Norsk bokmål|
ne nep नेपाली|nl dut Nederlands|nn nno Norsk nynorsk|no nor Norsk|oc oci Occitan|pa pan ਪੰਜਾਬੀ|
pl pol Polski|ps pus پښتو|pt por Português|ro rum Română|ru rus Русский|sa san संस्कृतम्|
sd snd سنڌي|si sin සිංහල|sk slo Slovenčina|sl slv Slovenščina|sn sna chiShona|so som Soomaali|
sq alb Shqip|sr srp Српски|su sun Basa Sunda|sv swe Svenska|sw swa Kiswahili|ta tam தமிழ்|
te tel తెలుగు|tg tgk Тоҷикӣ|th tha ไทย|tk tuk Türkmençe|tl tgl Tagalog|tr tur Türkçe|
tt tat Татарча|uk ukr Українська|ur urd اردو|uz uzb Oʻzbekcha|vi vie Tiếng Việt|yi yid ייִדיש|
yo yor Yorùbá|yue chi 粵語|zh chi 中文|
aa aar|ab abk|ae ave|ak aka|an arg|av ava|ay aym|bh bih|bi bis|bm bam|ce che|ch cha|co cos|
cr cre|cu chu|cv chv|dv div|dz dzo|ee ewe|eo epo Esperanto|ff ful|fj fij|fy fry Frysk|
ga gle Gaeilge|gd gla Gàidhlig|gn grn|gv glv|ho hmo|hz her|ia ina Interlingua|ie ile|ig ibo|
ii iii|ik ipk|io ido|iu iku|kg kon|ki kik|kj kua|kl kal|kr kau|ks kas|ku kur Kurdî|kv kom|
kw cor|ky kir Кыргызча|lg lug|li lim|lu lub|mh mah|na nau|nd nde|ng ndo|nr nbl|nv nav|ny nya|
oj oji|om orm|or ori ଓଡ଼ିଆ|os oss|pi pli|qu que Runasimi|rm roh Rumantsch|rn run|rw kin|
sc srd|se sme|sg sag|sm smo|ss ssw|st sot|ti tir ትግርኛ|tn tsn|to ton|ts tso|tw twi|ty tah|
ug uig ئۇيغۇرچە|ve ven|vo vol|wa wln|wo wol|xh xho isiXhosa|za zha|zu zul isiZulu
"""
_TRACK_LANGUAGES: dict[str, tuple[str, str | None]] = {
    fields[0]: (fields[1], fields[2] if len(fields) > 2 else None)
    for fields in (
        entry.split(maxsplit=2) for entry in _ISO_639_2.replace("\n", "").split("|") if entry
    )
}
# Scripts and regions, lower-cased, for codes such as pt-BR or zh-Hant.
_SUBTAGS = {
    "hans": "Simplified",
    "hant": "Traditional",
    "latn": "Latin",
    "cyrl": "Cyrillic",
    "419": "Latin America",
    "ar": "Argentina",
    "at": "Austria",
    "au": "Australia",
    "be": "Belgium",
    "br": "Brazil",
    "ca": "Canada",
    "ch": "Switzerland",
    "cn": "China",
    "de": "Germany",
    "es": "Spain",
    "fr": "France",
    "gb": "United Kingdom",
    "hk": "Hong Kong",
    "in": "India",
    "mx": "Mexico",
    "pt": "Portugal",
    "tw": "Taiwan",
    "us": "United States",
}
# ISO 639-1 codes Whisper does not transcribe but an LLM can translate into.
_OTHER_ISO_639_1 = (
    "aa ab ae ak an av ay bh bi bm ce ch co cr cu cv dv dz ee eo ff fj fy ga gd gn gv ho hz ia "
    "ie ig ii ik io iu jv kg ki kj kl kr ks ku kv kw ky lg li lu mh na nd ng nr nv ny oj om or "
    "os pi qu rm rn rw sc se sg sm ss st ti tn to ts tw ty ug ve vo wa wo xh za zu"
)
_TARGETS = frozenset([*_LANGUAGES, *_OTHER_ISO_639_1.split()])
# Names people type for a language in the language itself; English names come from _LANGUAGES.
_ENDONYMS = {
    "deutsch": "de",
    "español": "es",
    "espanol": "es",
    "français": "fr",
    "francais": "fr",
    "italiano": "it",
    "português": "pt",
    "portugues": "pt",
    "nederlands": "nl",
    "polski": "pl",
    "svenska": "sv",
    "norsk": "no",
    "dansk": "da",
    "suomi": "fi",
    "türkçe": "tr",
    "русский": "ru",
    "日本語": "ja",
    "中文": "zh",
    "한국어": "ko",
}
# Regions a target may name: the ISO 3166-1 countries (and XK, Kosovo, as CLDR has it) and the
# UN M.49 areas CLDR uses (419: Latin America). A code outside them is a typo or made up, and
# each target costs a translation pass.
_REGION_CODES = (
    "ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn bo "
    "bq br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj "
    "dk dm do dz ec ee eg eh er es et fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp "
    "gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg "
    "kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml "
    "mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe "
    "pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl "
    "sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug um "
    "us uy uz va vc ve vg vi vn vu wf ws xk ye yt za zm zw "
    "001 002 005 009 011 013 014 015 017 018 019 021 029 030 034 035 039 053 054 057 061 "
    "142 143 145 150 151 154 155 202 419"
)
_REGIONS = frozenset(_REGION_CODES.split())
# A language, then optionally a script we name and a region (ISO 3166 or UN M.49): zh-Hant-TW.
_SCRIPTS = "|".join(tag for tag in _SUBTAGS if len(tag) == 4)
_TARGET = re.compile(rf"([a-z]{{2,3}})(?:-({_SCRIPTS}))?(?:-([a-z]{{2}}|\d{{3}}))?")
_SPOKEN_EXAMPLES = "en, es, de, ja"


def language_name(code: str) -> str:
    """ "de" -> "German", "pt-BR" -> "Portuguese (Brazil)"; an unknown code is returned as is."""
    primary, *subtags = code.strip().replace("_", "-").split("-")
    name = _LANGUAGES.get(primary.lower())
    if name is None:
        return code
    details = [_SUBTAGS.get(tag.lower(), tag) for tag in subtags if tag]
    return f"{name} ({', '.join(details)})" if details else name


def iso639_2(code: str) -> str:
    """The ISO 639-2/B code a video container tags a track with: "de" -> "ger", "pt-BR" ->
    "por"; "und" (undetermined) for a code Subtide does not know."""
    known = _TRACK_LANGUAGES.get(_primary(code))
    return known[0] if known else "und"


def native_name(code: str) -> str:
    """A language as its speakers name it, for a track's title: "de" -> "Deutsch", "pt-BR" ->
    "Português (BR)"; the English name where the table has no native one."""
    primary, *subtags = code.strip().replace("_", "-").split("-")
    known = _TRACK_LANGUAGES.get(primary.lower())
    name = known[1] if known and known[1] else language_name(primary)
    return f"{name} ({'-'.join(subtags)})" if subtags and name != primary else name


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two codes name the same language, regions aside: "en" and "en-US" do."""
    if not a or not b:
        return False
    return _primary(a) == _primary(b)


def check_spoken(code: str) -> str:
    """The Whisper code for a spoken language ("EN", "en-US" -> "en"), or a bad_input error."""
    primary = _primary(code)
    if primary in WHISPER_LANGUAGES:
        return primary
    suggestion = _suggest(code)
    hint = f"Did you mean {suggestion}? " if suggestion in WHISPER_LANGUAGES else ""
    raise SubtideError(
        "bad_input",
        f"'{code.strip()}' is not a language Whisper can transcribe.",
        hint=f"{hint}Use a code such as {_SPOKEN_EXAMPLES} …, or leave it out to detect "
        "the language.",
    )


def check_target(code: str) -> str:
    """A translation target in its usual spelling ("PT_br" -> "pt-BR"), or a bad_input error."""
    normal = _normalised_target(code)
    if normal is not None:
        return normal
    if _known_language(code):  # with a region that is none
        raise SubtideError(
            "bad_input",
            f"'{code.strip()}' names no region Subtide knows.",
            hint="Use an ISO 3166 country code (pt-BR, fr-CA, en-GB) or 419 (es-419).",
        )
    suggestion = _suggest(code)
    hint = f"Did you mean {suggestion}? " if suggestion else ""
    raise SubtideError(
        "bad_input",
        f"'{code.strip()}' is not a language code Subtide knows.",
        hint=f"{hint}Use ISO 639-1 codes such as de, ja, pt-BR or zh-Hant.",
    )


def _known_language(code: str) -> re.Match[str] | None:
    """The parts of a target code whose language is one we know (its region unchecked)."""
    match = _TARGET.fullmatch(code.strip().replace("_", "-").lower())
    return match if match and match.group(1) in _TARGETS else None


def _normalised_target(code: str) -> str | None:
    match = _known_language(code)
    if match is None or (match.group(3) and match.group(3) not in _REGIONS):
        return None
    language, script, region = match.groups()
    return "-".join(
        part for part in (language, script and script.title(), region and region.upper()) if part
    )


def _suggest(text: str) -> str | None:
    """The code for a language given by its name: "german", "Deutsch" -> "de"."""
    wanted = text.strip().lower()
    for code, name in _LANGUAGES.items():
        if name.lower() == wanted:
            return code
    return _ENDONYMS.get(wanted)


def _primary(code: str) -> str:
    return code.strip().replace("_", "-").split("-")[0].lower()
