//! Marks tables (group -> account -> marks), the model's IDs, desired states and files.

use std::collections::BTreeMap;
use std::path::Path;

/// group -> account -> marks (ascending). Accounts without marks are absent.
pub type Marks = BTreeMap<String, BTreeMap<String, Vec<u32>>>;

/// A group ID that must be valid.
pub fn g(s: &str) -> marksync::model::GroupId {
    marksync::model::GroupId::new(s).unwrap()
}

/// An account that must be valid.
pub fn a(s: &str) -> marksync::model::Account {
    marksync::model::Account::new(s).unwrap()
}

/// A mark that must be valid.
pub fn m(n: u64) -> marksync::model::Mark {
    marksync::model::Mark::new(n).unwrap()
}

/// Adds `marks` of `account` in `group` to a desired state.
pub fn desire(
    d: &mut marksync::desired::DesiredState,
    group: marksync::model::GroupId,
    account: marksync::model::Account,
    marks: impl IntoIterator<Item = marksync::model::Mark>,
) {
    d.groups
        .entry(group)
        .or_default()
        .members
        .entry(account)
        .or_default()
        .extend(marks);
}

/// Marks from `(group, account, marks)` rows (marks sorted; a later row for the same member
/// replaces an earlier one).
pub fn marks(rows: &[(&str, &str, &[u32])]) -> Marks {
    let mut out = Marks::new();
    for (g, a, m) in rows {
        let mut m = m.to_vec();
        m.sort_unstable();
        out.entry((*g).into()).or_default().insert((*a).into(), m);
    }
    out
}

/// One group per id in `ids` (`{prefix}{id:04}`), each with one member `u` holding 1000 and
/// 1001: one call per group.
pub fn groups_of_one(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Marks {
    ids.into_iter()
        .map(|i| {
            let mut m = BTreeMap::new();
            m.insert("u".to_string(), vec![1000, 1001]);
            (format!("{prefix}{i:04}"), m)
        })
        .collect()
}

/// The marks a state records as confirmed.
pub fn confirmed_marks(st: &marksync::state::State) -> Marks {
    st.groups
        .iter()
        .map(|(g, accounts)| {
            let accounts = accounts
                .iter()
                .map(|(a, c)| (a.as_str().into(), c.iter().map(|(m, _)| m.get()).collect()))
                .collect();
            (g.as_str().into(), accounts)
        })
        .collect()
}

/// The groups of every part together (a later part's member replaces an earlier one's).
pub fn union(parts: &[&Marks]) -> Marks {
    let mut out = Marks::new();
    for p in parts {
        for (g, m) in *p {
            out.entry(g.clone()).or_default().extend(m.clone());
        }
    }
    out
}

/// A desired file declaring `groups` (`groups: {}` when empty).
pub fn yaml(groups: &Marks) -> String {
    let mut s = String::from("groups:");
    if groups.is_empty() {
        s.push_str(" {}\n");
        return s;
    }
    s.push('\n');
    for (g, members) in groups {
        s.push_str(&format!("  \"{g}\":\n    members:\n"));
        if members.is_empty() {
            s.truncate(s.len() - "members:\n".len());
            s.push_str("members: {}\n");
            continue;
        }
        for (a, m) in members {
            let m: Vec<String> = m.iter().map(u32::to_string).collect();
            s.push_str(&format!("      {a}: [{}]\n", m.join(", ")));
        }
    }
    s
}

/// Writes `content` to `path` atomically (temporary file, rename), as editors and `git` do, so
/// a process reading it never sees half a file.
pub fn write_atomic(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One mark of one member: (group, account, mark).
pub type Triple = (String, String, u32);

/// What differs between `live` and `want`: `(stray, missing)`.
pub fn diff(live: &Marks, want: &Marks) -> (Vec<Triple>, Vec<Triple>) {
    let triples = |m: &Marks| -> std::collections::BTreeSet<Triple> {
        m.iter()
            .flat_map(|(g, accounts)| {
                accounts.iter().flat_map(move |(a, marks)| {
                    marks.iter().map(move |k| (g.clone(), a.clone(), *k))
                })
            })
            .collect()
    };
    let (l, w) = (triples(live), triples(want));
    (
        l.difference(&w).cloned().collect(),
        w.difference(&l).cloned().collect(),
    )
}
