//! The human drift section of `plan --refresh` and `apply --refresh` (SPEC 10): counts by kind,
//! the marks not checked and why, unnameable holders and listings past the service's window.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{BOLD, YELLOW, plural};
use crate::model::GroupId;
use crate::refresh::{Classified, Drift, DriftCounts, DriftKind, OverCapacity, UnnameableHolder};

/// Drift kinds in words, for the human drift section.
pub fn drift_words(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::Lost => "lost",
        DriftKind::Offline => "offline",
        DriftKind::Gone => "gone",
        DriftKind::Unmanaged => "unmanaged",
        DriftKind::Adopted => "adopted",
        DriftKind::NotChecked => "not checked",
    }
}

/// `2 lost, 1 unmanaged`: the non-zero counts, in report order.
pub(super) fn drift_counts_text(counts: &DriftCounts) -> String {
    DriftKind::ALL
        .iter()
        .filter(|k| counts.get(**k) > 0)
        .map(|k| format!("{} {}", counts.get(*k), drift_words(*k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drift section a `--refresh` plan shows before its calls: per group, counts by kind; with
/// `verbose`, every drifted member and mark (`not checked` ones with the reason). Ends with a
/// blank line, so the plan follows.
pub fn drift(classified: &Classified, verbose: bool) -> String {
    let total = classified.drift.len();
    let unchecked: Vec<&Drift> = classified
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::NotChecked)
        .collect();
    if total == 0 {
        let mut out = String::from("Refreshed: the service holds what the state records.\n");
        unnameable(&mut out, &classified.unnameable, verbose);
        over_capacity(&mut out, &classified.over_capacity);
        out.push('\n');
        return out;
    }
    let mut out = String::new();
    let drifted = total - unchecked.len();
    if drifted == 0 {
        // Nothing the refresh could judge differs: that is not drift, and must not read as it.
        let _ = writeln!(
            out,
            "Refreshed: no drift found; {} {} not checked: {}.",
            unchecked.len(),
            plural(unchecked.len(), "mark", "marks"),
            not_checked_reasons(&unchecked)
        );
        if !verbose {
            unnameable(&mut out, &classified.unnameable, verbose);
            over_capacity(&mut out, &classified.over_capacity);
            out.push('\n');
            return out;
        }
    } else {
        let counts = classified
            .counts()
            .without(crate::refresh::DriftKind::NotChecked);
        let _ = write!(
            out,
            "{BOLD}Drift{BOLD:#}: {drifted} {} to report ({})",
            plural(drifted, "mark", "marks"),
            drift_counts_text(&counts)
        );
        if unchecked.is_empty() {
            out.push_str(".\n");
        } else {
            let _ = writeln!(
                out,
                "; {} more not checked: {}.",
                unchecked.len(),
                not_checked_reasons(&unchecked)
            );
        }
    }
    let mut by_group: BTreeMap<&GroupId, Vec<&Drift>> = BTreeMap::new();
    for d in &classified.drift {
        by_group.entry(&d.group).or_default().push(d);
    }
    for (group, list) in by_group {
        let owned: Vec<Drift> = list.iter().map(|d| (*d).clone()).collect();
        let _ = writeln!(
            out,
            "  group {group}: {}",
            drift_counts_text(&DriftCounts::of(&owned))
        );
        if verbose {
            let kw = list
                .iter()
                .map(|d| drift_words(d.kind).len())
                .max()
                .unwrap_or(0);
            let aw = list
                .iter()
                .map(|d| d.account.as_str().chars().count())
                .max()
                .unwrap_or(0);
            let mut sorted = list;
            sorted.sort_by(|a, b| (a.kind, &a.account, a.mark).cmp(&(b.kind, &b.account, b.mark)));
            for d in sorted {
                let reason = match d.reason {
                    Some(crate::refresh::NotChecked::FullListing) => {
                        "  (the listing was full: absence is not evidence)"
                    }
                    Some(crate::refresh::NotChecked::Recent) => {
                        "  (confirmed too recently to judge)"
                    }
                    Some(crate::refresh::NotChecked::InFlight) => {
                        "  (an interrupted apply: re-sent by the plan)"
                    }
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "    {:<kw$}  {:<aw$}  {}{reason}",
                    drift_words(d.kind),
                    d.account.as_str(),
                    d.mark
                );
            }
        }
    }
    unnameable(&mut out, &classified.unnameable, verbose);
    over_capacity(&mut out, &classified.over_capacity);
    out.push('\n');
    out
}

/// `12 confirmed too recently to judge (...), 3 ...`: why marks were not checked, by reason.
fn not_checked_reasons(unchecked: &[&Drift]) -> String {
    use crate::refresh::NotChecked;
    [
        (
            NotChecked::Recent,
            "confirmed too recently to judge (the listing lags up to 40 s: refresh again later)",
        ),
        (
            NotChecked::FullListing,
            "beyond a full listing (1000 members: absence is no evidence)",
        ),
        (
            NotChecked::InFlight,
            "left unknown by an interrupted apply (the plan sends them again)",
        ),
    ]
    .iter()
    .filter_map(|(reason, words)| {
        let n = unchecked
            .iter()
            .filter(|d| d.reason == Some(*reason))
            .count();
        (n > 0).then(|| format!("{n} {words}"))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// One warning per mark whose holders after the plan exceed the service's 1000 per mark.
fn over_capacity(out: &mut String, list: &[OverCapacity]) {
    for c in list {
        let total = c.desired + c.unmanaged + c.unnameable;
        let _ = writeln!(
            out,
            "{YELLOW}warning{YELLOW:#}: group {} mark {}: {total} holders after this plan ({} \
             declared, {} unmanaged, {} unnameable) exceed the service's 1000 per mark; sets past \
             it will be refused until another tool clears some.",
            c.group, c.mark, c.desired, c.unmanaged, c.unnameable,
        );
    }
}

/// `4 live holders with names marksync cannot hold as an account`.
pub fn unnameable_count(n: usize) -> String {
    if n == 1 {
        "1 live holder with a name marksync cannot hold as an account".into()
    } else {
        format!("{n} live holders with names marksync cannot hold as an account")
    }
}

/// The drift section's report of live holders marksync cannot name: the count, per group and
/// mark; with `verbose`, each name quoted and escaped (an empty name reads `""`).
fn unnameable(out: &mut String, list: &[UnnameableHolder], verbose: bool) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{YELLOW}{}{YELLOW:#} (set by another tool: never touched, and still using the group's \
         10-mark and 1000-member capacity).",
        unnameable_count(list.len())
    );
    let mut by_group: BTreeMap<&GroupId, Vec<&UnnameableHolder>> = BTreeMap::new();
    for h in list {
        by_group.entry(&h.group).or_default().push(h);
    }
    for (group, holders) in by_group {
        let mut per_mark: BTreeMap<crate::model::Mark, usize> = BTreeMap::new();
        for h in &holders {
            *per_mark.entry(h.mark).or_default() += 1;
        }
        let marks = per_mark
            .iter()
            .map(|(m, n)| format!("mark {m}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  group {group}: {} ({marks})", holders.len());
        if verbose {
            let names: Vec<String> = holders.iter().map(|h| format!("{:?}", h.holder)).collect();
            let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            for (h, name) in holders.iter().zip(&names) {
                let _ = writeln!(out, "    {name:<w$}  {}", h.mark);
            }
        }
    }
}
