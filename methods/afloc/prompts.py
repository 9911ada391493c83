"""AFLoc's zero-shot prompts (official CXR dictionary shipped as ``data/cxr_prompts.json``).

Per known category every severity x subtype x location combination, formatted
``"{Category}:{sev} {sub} {loc}"`` (the category as given, case kept; the colon is dropped by
the text cleaning later); the negative prompt is ``"no {Category}. "``. "no finding" has the
positive "No finding" and the negative "finding" (one token, so it cleans to an empty text).
Unknown categories get ``"Findings suggesting {category lower-cased}"``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data") / "cxr_prompts.json"


@lru_cache(maxsize=1)
def prompt_data() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def cxr_prompts(category: str) -> tuple[list[str], list[str]]:
    """(positive prompts, negative prompts) for one category, in the official order."""
    data = prompt_data()
    tpl = data["templates"]
    entry = data["dictionary"].get(category.lower())
    if entry is not None:
        pos = [tpl["positive"].format(category=category, severity=sev, subtype=sub,
                                      location=loc)
               for sev in entry["severity"] for sub in entry["subtype"]
               for loc in entry["location"]]
        return pos, [tpl["negative"].format(category=category)]
    if category.lower() == "no finding":
        return [tpl["no_finding_positive"]], [tpl["no_finding_negative"]]
    return ([tpl["unknown_positive"].format(category_lower=category.lower())],
            [tpl["negative"].format(category=category)])


def localization_prompt(category: str) -> str:
    return prompt_data()["templates"]["localization"].format(category=category)
