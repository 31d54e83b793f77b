"""The synthetic problem forms are written in three places: the generator (lib.problems), the
embedded teacher's plans (lib.teachers.embedded) and the rule tagger (lib.tagging). This proves
the three agree on every form the generator makes: the tagger recognises each one by a rule of
its own (never the keyword fallback) with the generator's domain and level, and the teacher has
a plan written for it. A form added to the generator without the other two fails here."""
from __future__ import annotations

import collections
import json

from lib.problems import DOMAINS, LEVELS, generate
from lib.tagging import RuleTagger, canonical_difficulty
from lib.problems import DIFFICULTY_NAMES
from lib.teachers.embedded import _plan_key

# Forms the teacher has no plan of its own for (it uses its generic one). Known and kept so the
# embedded default's data (and so its table) does not change; remove an entry once a plan exists.
GENERIC_PLAN_FORMS = {("counting_probability", "neither")}


def _forms(seed=123):
    by_form = collections.defaultdict(list)
    for split, n in (("train", 4000), ("test", 200)):
        for p in generate(n, seed=seed, split=split):
            by_form[(p.domain, json.loads(p.spec).get("form", "chain"))].append(p)  # arithmetic: op chains
    return by_form


def test_every_form_is_known_to_the_tagger_and_the_teacher():
    by_form = _forms()
    assert {d for d, _ in by_form} == set(DOMAINS)
    assert len(by_form) >= 15, sorted(by_form)  # the generator's variety (19 forms when written)
    tagger = RuleTagger()
    no_plan = set()
    for (domain, form), ps in by_form.items():
        for p in ps[:40]:
            tags = tagger.tag(p.problem)
            assert tags.rule != "fallback", (domain, form, p.problem)
            assert tags.domain == domain, (domain, form, p.problem, tags)
            assert canonical_difficulty(tags.difficulty) == DIFFICULTY_NAMES[p.level], (domain, form, p.problem, tags)
        if _plan_key(ps[0], ps[0].steps) == "any":
            no_plan.add((domain, form))
    assert no_plan == GENERIC_PLAN_FORMS


def test_every_domain_has_every_level():
    seen = collections.Counter((p.domain, p.level) for p in generate(2000, seed=7))
    assert set(seen) == {(d, lv) for d in DOMAINS for lv in LEVELS}
