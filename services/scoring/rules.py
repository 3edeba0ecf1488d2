"""Rules beside the model: monitored thresholds that can raise a tier and always say why.

A rules file (YAML, one per business type in ``services/scoring/rules/``; another with
``CHURNWATCH_RULES``) looks like::

    business_type: salon
    tiers:                               # optional: this file's own tier levels (any of the
      high: {enter: 0.8, exit: 0.7}      # four; the rest stay the business type's)
    rules:
      - id: open_high_complaint          # also the reason code unless `code` is given
        # all must hold (or a list); a feature may be compared with another, plus or minus
        when: open_high_complaints >= 1 and days_since_last_activity >= days_since_last_complaint - 1
        min_tier: medium                 # medium | high
        reason:
          en: "Unresolved high-severity complaints: {open_high_complaints:.0f}"
          zh-CN: "有{open_high_complaints:.0f}个未解决的严重投诉"
        label:                           # optional: the rule in staff's words
          en: "a high-severity complaint is open and they have not been back since"
          zh-CN: "有未解决的严重投诉，且此后未再光顾"

Conditions compare one feature of :data:`~services.scoring.features.FEATURE_NAMES` with a
number (``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=``), or with another feature plus or minus a
number (``days_since_last_activity >= days_since_last_complaint - 1``); reasons may quote any feature of the
customer with Python format fields, and ``{occasion}``: "visit" (到店), or "purchase" (购买) for a
customer whose occasions were mostly online orders, and ``{usual_gap}``: "every 28 days"
(每28天一次), or "every 10 days, with longer breaks between" for one who comes in runs
(features.usual_gap_words). Precedence: model score -> tier thresholds and hysteresis
-> rules floor (a rule raises the tier to at least its ``min_tier``, never lowers it, and adds
its reason first). Every mistake is reported at start-up naming the file, rule and field.
"""

from __future__ import annotations

import functools
import operator
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from services.common.exceptions import ConfigError
from services.common.riskchange import TIER_RANK, Reason
from services.common.settings import BUSINESS_TYPES
from services.scoring.features import FEATURE_NAMES, occasion_words, usual_gap_words

RULES_DIR = Path(__file__).with_name("rules")
# an online shop keeps retail's rules (its own tier thresholds: settings.ONLINE_TIERS)
_RULES_FILE = {"online": "retail"}
RULE_WEIGHT = 9.0  # rule reasons rank above model reasons
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
_NUMBER = r"\d+(?:\.\d+)?"
# <feature> <op> <number>, or <feature> <op> <feature> [+|- <number>]
_COND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*"
                   rf"(?:(-?{_NUMBER})|([A-Za-z_][A-Za-z0-9_]*)(?:\s*([+-])\s*({_NUMBER}))?)\s*$")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# The words a reason may quote besides features, as the model's reasons say them: what the
# customer's occasions are called (features.occasion_words), how often they usually come
# (features.usual_gap_words).
OCCASION = "occasion"
USUAL_GAP = "usual_gap"
WORDS = (OCCASION, USUAL_GAP)


@dataclass(frozen=True)
class Condition:
    """``feature op value``, or with ``other``: ``feature op other + value`` (another feature
    of the same customer, e.g. not back since their complaint:
    ``days_since_last_activity >= days_since_last_complaint - 1``)."""

    feature: str
    op: str
    value: float
    other: str | None = None

    def holds(self, f: dict[str, float]) -> bool:
        bound = self.value if self.other is None else f[self.other] + self.value
        return bool(_OPS[self.op](f[self.feature], bound))

    def mask(self, column: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
        bound = self.value if other is None else other + self.value
        return np.asarray(_OPS[self.op](column, bound), dtype=bool)

    def __str__(self) -> str:
        if self.other is None:
            return f"{self.feature} {self.op} {self.value:g}"
        shift = f" {'-' if self.value < 0 else '+'} {abs(self.value):g}" if self.value else ""
        return f"{self.feature} {self.op} {self.other}{shift}"


@dataclass(frozen=True)
class Rule:
    id: str
    code: str
    conditions: tuple[Condition, ...]
    min_tier: str
    text: str
    text_zh: str
    # what staff read when the rule holds a tier above the score's ("Raised to high by a
    # business rule: away three times their usual gap"); the id in words when not given
    label: str = ""
    label_zh: str = ""

    @property
    def name(self) -> str:
        return self.label or self.id.replace("_", " ")

    @property
    def name_zh(self) -> str:
        return self.label_zh or self.id.replace("_", " ")

    def holds(self, f: dict[str, float]) -> bool:
        return all(c.holds(f) for c in self.conditions)

    def reason(self, f: dict[str, float]) -> Reason:
        names = _placeholders(self.text, self.text_zh)
        values: dict[str, Any] = {k: _Num(f[k]) for k in names if k not in WORDS}
        en = zh = values
        if OCCASION in names or USUAL_GAP in names:  # words differ by language: two dicts
            zh = dict(values)
            if OCCASION in names:
                en[OCCASION], zh[OCCASION] = occasion_words(f)
            if USUAL_GAP in names:
                en[USUAL_GAP], zh[USUAL_GAP] = usual_gap_words(f)
        # validated: pydantic-core's check (~1.5 µs) costs half what model_construct's Python
        # does (~3 µs), on the scorer's hot path
        return Reason(
            code=self.code, text=english_plurals(self.text.format(**en)),
            text_zh=self.text_zh.format(**zh), weight=RULE_WEIGHT)


@functools.lru_cache(maxsize=256)
def _placeholders(*texts: str) -> tuple[str, ...]:
    """The feature names the templates format (``{spend_90:.0f}`` -> ``spend_90``): a reason
    formats those, not all 32 features, on the scorer's hot path."""
    names: set[str] = set()
    for text in texts:
        for _, field, _, _ in string.Formatter().parse(text):
            if field:
                names.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return tuple(sorted(names))


_ONE = re.compile(r"\b1 ((?:[a-z-]+ )?)(day|visit|purchase|complaint|refund|return|time)s\b")


@functools.lru_cache(maxsize=8192)  # reasons repeat (small whole numbers): the scorer's hot path
def english_plurals(text: str) -> str:
    """Mend "1 days" / "1 open complaints" and "every 1 day" in formatted English reasons."""
    return _ONE.sub(r"1 \1\2", text).replace("every 1 day", "every day")


class _Num(float):
    """A feature value in a reason: ``{x}`` prints 63, not 63.0, for whole numbers."""

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(int(self)) if float(self).is_integer() else f"{float(self):.1f}"
        return format(float(self), spec)


@dataclass(frozen=True)
class RuleSet:
    name: str
    rules: tuple[Rule, ...]
    # the file's own tier levels (``tiers:``), as ("medium_enter", 0.5) ...; none: the levels
    # of its business type (or CHURNWATCH_TIER_*), :meth:`Thresholds.with_levels`
    levels: tuple[tuple[str, float], ...] = ()
    # ``closed_days_expected: true``: rules that read a holiday as leaving (a school's three
    # weeks), so a tenant judged by them with no closed days on record is warned of
    closed_days_expected: bool = False

    def apply(self, tier: str, f: dict[str, float]) -> tuple[str, list[Reason]]:
        """The tier after the rules floor, and the reasons of every rule that holds."""
        reasons: list[Reason] = []
        for rule in self.rules:
            if rule.holds(f):
                reasons.append(rule.reason(f))
                if TIER_RANK[rule.min_tier] > TIER_RANK[tier]:
                    tier = rule.min_tier
        return tier, reasons

    def floors(self, X: np.ndarray, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
        """Vectorised: the minimum tier rank the rules impose on each row (0 = none)."""
        col = {n: i for i, n in enumerate(names)}
        out = np.zeros(len(X), dtype=int)
        for rule in self.rules:
            m = np.ones(len(X), dtype=bool)
            for c in rule.conditions:
                m &= c.mask(X[:, col[c.feature]],
                            None if c.other is None else X[:, col[c.other]])
            out = np.where(m, np.maximum(out, TIER_RANK[rule.min_tier]), out)
        return out


def parse_rules(data: Any, source: str) -> RuleSet:
    """Validate a parsed rules document; ConfigError names the rule and field to fix."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ConfigError(f"{source}: must be a mapping with a 'rules' list, e.g. "
                          "\"rules: [{id: ..., when: ..., min_tier: ..., reason: {en: ..., zh-CN: ...}}]\"")
    unknown_top = sorted(set(data) - {"business_type", "description", "tiers",
                                      "closed_days_expected", "rules"})
    if unknown_top:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown_top}; allowed: "
                          "business_type, description, tiers, closed_days_expected, rules")
    expected = data.get("closed_days_expected", False)
    if not isinstance(expected, bool):
        raise ConfigError(f"{source}: 'closed_days_expected' must be true or false "
                          f"(got {expected!r})")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["rules"]):
        where = f"{source}: rule {i + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a mapping with id, when, min_tier and reason")
        rid = raw.get("id")
        if not isinstance(rid, str) or not _ID.match(rid):
            raise ConfigError(f"{where}: 'id' must be lower_snake_case (got {rid!r})")
        where = f"{source}: rule {i + 1} ({rid})"
        if rid in seen:
            raise ConfigError(f"{where}: duplicate id; every rule needs its own")
        seen.add(rid)
        unknown = sorted(set(raw) - {"id", "code", "when", "min_tier", "reason", "label",
                                     "description"})
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: id, code, when, "
                              "min_tier, reason, label, description")
        code = raw.get("code", rid)
        if not isinstance(code, str) or not _ID.match(code):
            raise ConfigError(f"{where}: 'code' must be lower_snake_case (got {code!r})")
        conditions = _conditions(raw.get("when"), where)
        tier = raw.get("min_tier")
        if tier not in ("medium", "high"):
            raise ConfigError(f"{where}: 'min_tier' must be medium or high (got {tier!r}); a rule "
                              "can only raise a tier")
        reason = raw.get("reason")
        if not isinstance(reason, dict):
            raise ConfigError(f"{where}: 'reason' must be a mapping with 'en' and 'zh-CN' texts")
        texts = []
        for lang in ("en", "zh-CN"):
            text = reason.get(lang)
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}: 'reason.{lang}' must be a non-empty text")
            _check_template(text, f"{where}: 'reason.{lang}'")
            texts.append(text)
        labels = _label(raw.get("label"), where)
        rules.append(Rule(rid, code, conditions, tier, texts[0], texts[1], *labels))
    return RuleSet(str(data.get("business_type", source)), tuple(rules),
                   _levels(data.get("tiers"), source), expected)


def _levels(raw: Any, source: str) -> tuple[tuple[str, float], ...]:
    """A rules file's optional ``tiers``: ``{medium: {enter, exit}, high: {enter, exit}}``,
    any of the four (the rest stay the business type's); each a score strictly between 0
    and 1. Whether they fit together is checked with the rest (:meth:`Thresholds.with_levels`)."""
    if raw is None:
        return ()
    example = "e.g. \"tiers: {medium: {enter: 0.5, exit: 0.4}, high: {enter: 0.8, exit: 0.7}}\""
    if not isinstance(raw, dict) or not raw or set(raw) - {"medium", "high"}:
        raise ConfigError(f"{source}: 'tiers' must map medium and/or high to their enter and "
                          f"exit levels, {example}")
    out: list[tuple[str, float]] = []
    for tier in ("medium", "high"):
        if tier not in raw:
            continue
        spec = raw[tier]
        if not isinstance(spec, dict) or not spec or set(spec) - {"enter", "exit"}:
            raise ConfigError(f"{source}: 'tiers.{tier}' must have 'enter' and/or 'exit' "
                              f"(nothing else), {example}")
        for edge in ("enter", "exit"):
            if edge not in spec:
                continue
            value = spec[edge]
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 < value < 1:
                raise ConfigError(f"{source}: 'tiers.{tier}.{edge}' must be a score between 0 "
                                  f"and 1, exclusive (got {value!r})")
            out.append((f"{tier}_{edge}", float(value)))
    return tuple(out)


def _label(label: Any, where: str) -> tuple[str, str]:
    """A rule's optional ``label`` ({en, zh-CN}): plain text of at most 80 characters."""
    if label is None:
        return "", ""
    if not isinstance(label, dict) or set(label) != {"en", "zh-CN"}:
        raise ConfigError(f"{where}: 'label' must be a mapping with 'en' and 'zh-CN' texts, e.g. "
                          "{en: \"away three times their usual gap\", zh-CN: \"…\"}")
    out = []
    for lang in ("en", "zh-CN"):
        text = label[lang]
        if not isinstance(text, str) or not text.strip() or len(text) > 80 or "\n" in text:
            raise ConfigError(f"{where}: 'label.{lang}' must be one line of text, 1-80 "
                              f"characters (got {text!r})")
        out.append(text.strip())
    return out[0], out[1]


def _conditions(when: Any, where: str) -> tuple[Condition, ...]:
    if isinstance(when, str):
        parts = [p for p in re.split(r"\s+and\s+", when.strip()) if p]
    elif isinstance(when, list) and all(isinstance(p, str) for p in when):
        parts = list(when)
    else:
        raise ConfigError(f"{where}: 'when' must be a condition such as 'overdue_ratio >= 3' or a "
                          f"list of them (got {when!r})")
    if not parts:
        raise ConfigError(f"{where}: 'when' is empty; give at least one condition")
    out = []
    for part in parts:
        m = _COND.match(part)
        if not m:
            raise ConfigError(f"{where}: 'when' condition {part!r} must look like "
                              "'<feature> <op> <number>' or '<feature> <op> <feature> [+ or - "
                              "<number>]' with op one of >=, >, <=, <, ==, !=")
        feature, op, number, other, sign, shift = m.groups()
        for name in (feature, other):
            if name is not None and name not in FEATURE_NAMES:
                close = [n for n in FEATURE_NAMES if name.split("_")[0] in n][:4]
                raise ConfigError(f"{where}: 'when' uses unknown feature {name!r}"
                                  + (f" (did you mean {', '.join(close)}?)" if close else "")
                                  + "; the features are listed in docs/model.md")
        if other is None:
            out.append(Condition(feature, op, float(number)))
        else:
            value = float(shift or 0) * (-1 if sign == "-" else 1)
            out.append(Condition(feature, op, value, other))
    return tuple(out)


def _check_template(text: str, where: str) -> None:
    sample: dict[str, Any] = {n: _Num(12.5) for n in FEATURE_NAMES}
    try:
        text.format(**sample, **{OCCASION: "visit", USUAL_GAP: "every 28 days"})
    except KeyError as exc:
        raise ConfigError(f"{where}: placeholder {{{exc.args[0]}}} is not a feature; use one of "
                          "the feature names (docs/model.md), {occasion} or {usual_gap}"
                          ) from None
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{where}: bad placeholder ({exc}); write e.g. "
                          "{days_since_last_activity:.0f}") from None


def load_rules(path: Path | None = None, business_type: str = "default") -> RuleSet:
    """The rules at ``path``, or the packaged rules of ``business_type``."""
    if path is None:
        if business_type not in BUSINESS_TYPES:
            raise ConfigError(f"unknown business type {business_type!r}; choose one of "
                              f"{', '.join(BUSINESS_TYPES)}")
        if business_type in _RULES_FILE:  # another type's file, under this type's name
            return replace(load_rules(None, _RULES_FILE[business_type]), name=business_type)
        path = RULES_DIR / f"{business_type}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_rules(data, str(path))


def rules_from_settings(settings: Any) -> RuleSet:
    return load_rules(settings.rules, settings.business_type)
