//! What `marksync state rm` says about what it forgot: a mark a desired file still declares is
//! set again by the next apply (forgetting is not clearing, and not letting go); one no desired
//! file declares is no longer managed. Pure.

use std::path::Path;

use crate::desired::DesiredState;
use crate::model::{Account, GroupId, Mark};
use crate::state::State;

/// The (account, mark) pairs `state rm GROUP [ACCOUNT [MARK]]` forgets: confirmed or intended,
/// sorted. Read before the removal.
pub fn recorded(
    state: &State,
    group: &GroupId,
    account: Option<&Account>,
    mark: Option<Mark>,
) -> Vec<(Account, Mark)> {
    let confirmed = state.groups.get(group).into_iter().flat_map(|members| {
        members
            .iter()
            .flat_map(|(a, c)| c.iter().map(move |(m, _)| (a.clone(), m)))
    });
    let intended = state.intents.get(group).into_iter().flat_map(|members| {
        members
            .iter()
            .flat_map(|(a, marks)| marks.iter().map(move |m| (a.clone(), m)))
    });
    let mut pairs: Vec<(Account, Mark)> = confirmed
        .chain(intended)
        .filter(|(a, m)| account.is_none_or(|x| x == a) && mark.is_none_or(|x| x == *m))
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// The sentences after "Forgot ...: the state no longer records it.": nothing was cleared, and
/// whether the desired files (`None`: they could not be read) still declare what was forgotten.
/// `root` is the config's `desired` path: the declaring file is named relative to its parent.
pub fn note(
    desired: Option<&DesiredState>,
    root: &Path,
    group: &GroupId,
    forgotten: &[(Account, Mark)],
) -> String {
    let Some(desired) = desired else {
        return "Nothing was cleared on the service. The desired files could not be read to tell \
                whether one still declares it: if one does, the next apply sets it again."
            .into();
    };
    let declared: Vec<&(Account, Mark)> = forgotten
        .iter()
        .filter(|(a, m)| {
            desired
                .groups
                .get(group)
                .and_then(|g| g.members.get(a))
                .is_some_and(|marks| marks.contains(*m))
        })
        .collect();
    let Some((a, m)) = declared.first() else {
        return "Nothing was cleared on the service. No desired file declares it: marksync no \
                longer manages it, and the next apply leaves it alone."
            .into();
    };
    let at = match desired.origins.get(group) {
        Some(o) => {
            let base = root.parent().unwrap_or(Path::new(""));
            let path = o.path.strip_prefix(base).unwrap_or(&o.path);
            format!("{}:{}", path.display(), o.line)
        }
        None => "a desired file".into(),
    };
    let which = if declared.len() == 1 {
        format!("mark {m} of {a}")
    } else {
        format!(
            "{} of the {} marks forgotten, mark {m} of {a} among them",
            declared.len(),
            forgotten.len()
        )
    };
    let rest = match forgotten.len() - declared.len() {
        0 => String::new(),
        n => format!(
            " The other {n} {} no longer managed.",
            if n == 1 { "is" } else { "are" }
        ),
    };
    format!(
        "Nothing was cleared on the service. {at} still declares it ({which}): the next apply \
         sets it again. To stop managing it, remove it from the desired files first.{rest}"
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::desired::Origin;
    use crate::model::test_ids::{a, g, m};

    fn desired() -> DesiredState {
        let mut d = DesiredState::default();
        let group = d.groups.entry(g("@TGS#a")).or_default();
        group
            .members
            .insert(a("ann"), [m(1000)].into_iter().collect());
        d.origins.insert(
            g("@TGS#a"),
            Origin {
                path: PathBuf::from("/srv/marks/a.yaml"),
                line: 2,
                column: 3,
                source_line: String::new(),
                source_offset: 0,
            },
        );
        d
    }

    fn state() -> State {
        let mut st = State::new(1);
        st.confirm(&g("@TGS#a"), &a("ann"), [m(1000), m(1001)], 1);
        st.intend(&g("@TGS#a"), &a("bob"), [m(1002)]);
        st
    }

    #[test]
    fn the_pairs_forgotten_are_confirmed_and_intended_marks_of_what_was_named() {
        let st = state();
        let group = g("@TGS#a");
        assert_eq!(recorded(&st, &group, None, None).len(), 3);
        assert_eq!(
            recorded(&st, &group, Some(&a("bob")), None),
            vec![(a("bob"), m(1002))]
        );
        assert_eq!(
            recorded(&st, &group, Some(&a("ann")), Some(m(1001))),
            vec![(a("ann"), m(1001))]
        );
    }

    #[test]
    fn a_declared_mark_is_named_with_its_file_and_set_again_an_undeclared_one_is_let_go() {
        let (d, st, group) = (desired(), state(), g("@TGS#a"));
        let root = Path::new("/srv/marks");
        let one = note(
            Some(&d),
            root,
            &group,
            &recorded(&st, &group, Some(&a("ann")), Some(m(1000))),
        );
        assert!(
            one.contains(
                "marks/a.yaml:2 still declares it (mark 1000 of ann): the next apply sets it again."
            ),
            "{one}"
        );
        let all = note(Some(&d), root, &group, &recorded(&st, &group, None, None));
        assert!(
            all.contains("still declares it (mark 1000 of ann)")
                && all.ends_with("The other 2 are no longer managed."),
            "{all}"
        );
        let none = note(
            Some(&d),
            root,
            &group,
            &recorded(&st, &group, Some(&a("bob")), None),
        );
        assert!(none.contains("No desired file declares it"), "{none}");
        let unknown = note(None, root, &group, &[]);
        assert!(unknown.contains("could not be read"), "{unknown}");
    }
}
