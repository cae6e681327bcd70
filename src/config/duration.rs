//! Duration values: humantime text held to each key's bounds, with the messages that catch a
//! unit typo (`30ms` for `30m`) or a missing unit.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::{Checker, DAY, HOUR, MINUTE, written};
use crate::yaml::{Scalar, Value};

impl Checker<'_> {
    /// A duration within the key's bounds ([`DURATION_BOUNDS`]).
    pub(super) fn duration(
        &mut self,
        v: &Spanned<Value>,
        key: &str,
        bounds: Option<(Duration, Duration)>,
    ) -> Option<Duration> {
        let s = match &v.value {
            Value::Scalar(Scalar::Str(s)) => s,
            Value::Scalar(scalar @ (Scalar::Int(_) | Scalar::Float(_))) if !matches!(scalar, Scalar::Float(f) if !f.is_finite()) =>
            {
                let written = written(self.text, &v.referenced).unwrap_or_else(|| scalar.text());
                let (lo, hi) = bounds.unwrap_or((Duration::from_millis(1), Duration::MAX));
                let range = format!("between {} and {}", short(lo), short(hi));
                // Only a suggestion that is in range: `renew_margin: 12` is not 12s.
                let fits: Vec<(&str, String)> = ["s", "m", "h"]
                    .into_iter()
                    .map(|unit| (unit, format!("{written}{unit}")))
                    .filter(|(_, text)| {
                        humantime::parse_duration(text).is_ok_and(|d| (lo..=hi).contains(&d))
                    })
                    .collect();
                let message = match fits.first() {
                    Some(("s", seconds)) => format!(
                        "`{key}` needs a unit: write {seconds} for seconds (durations look like 90s, 5m or 12h)"
                    ),
                    Some(_) => format!(
                        "`{key}` needs a unit, and {written}s would be out of range ({range}): write {}",
                        fits.iter()
                            .map(|f| f.1.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    None => format!(
                        "`{key}` needs a unit (durations look like 90s, 5m or 12h) and must be {range}"
                    ),
                };
                self.err(&v.referenced, message);
                return None;
            }
            other => {
                let found = match other {
                    Value::Scalar(scalar @ Scalar::Float(_)) => {
                        written(self.text, &v.referenced).unwrap_or_else(|| scalar.text())
                    }
                    other => other.kind().to_string(),
                };
                self.err(
                    &v.referenced,
                    format!("`{key}` must be a duration such as 90s, 5m or 12h, found {found}"),
                );
                return None;
            }
        };
        let (lo, hi) = bounds.unwrap_or((Duration::from_millis(1), Duration::MAX));
        let range = format!("between {} and {}", short(lo), short(hi));
        let parsed = match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => {
                self.err(
                    &v.referenced,
                    format!("`{key}` must be {range}, found {}", s.trim()),
                );
                return None;
            }
            Err(e) => {
                self.err(
                    &v.referenced,
                    format!("`{key}`: {s:?} is not a duration ({e}); write it like 90s, 5m or 12h"),
                );
                return None;
            }
        };
        if (lo..=hi).contains(&parsed) {
            return Some(parsed);
        }
        let hint = unit_typo(s, lo, hi)
            .map(|fix| format!("; did you mean {fix}?"))
            .unwrap_or_default();
        self.err(
            &v.referenced,
            format!("`{key}` must be {range}, found {}{hint}", s.trim()),
        );
        None
    }
}

/// A duration the way users write it: `300ms`, `90s`, `30m`, `12h`, `7d` (the largest unit that
/// divides it).
pub(super) fn short(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// For an out-of-range duration of one number and one unit, the same number with a unit one
/// slip of the finger away that is in range: a letter too many or too few (`30ms` for `30m`,
/// `300s` for `300ms`) or the wrong case (`1M`, a month, for `1m`). Other units are not offered:
/// `72h` is not a typo of `72m`.
pub(super) fn unit_typo(text: &str, lo: Duration, hi: Duration) -> Option<String> {
    const UNITS: [(&str, Duration); 5] = [
        ("ms", Duration::from_millis(1)),
        ("s", Duration::from_secs(1)),
        ("m", Duration::from_secs(MINUTE)),
        ("h", Duration::from_secs(HOUR)),
        ("d", Duration::from_secs(DAY)),
    ];
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u32 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim();
    let mut best: Option<(usize, String)> = None;
    for (candidate, per) in UNITS {
        let distance = strsim::levenshtein(unit, candidate);
        let slip = (distance == 1 && unit.len() != candidate.len())
            || (candidate != unit && candidate.eq_ignore_ascii_case(unit));
        let fits = per.checked_mul(n).is_some_and(|d| (lo..=hi).contains(&d));
        if slip && fits && best.as_ref().is_none_or(|(b, _)| distance < *b) {
            best = Some((distance, format!("{n}{candidate}")));
        }
    }
    best.map(|(_, fix)| fix)
}
