//! One group's body in a JSON desired file: its `members` and `marks` sections, read into a
//! [`GroupBuild`] and checked as a whole at the group's end (repeated members, unusual accounts,
//! the service's limits).

use super::*;

/// One member entry of `members`, as read.
struct Listed {
    /// The account, or the name that is not a valid account.
    name: Result<Account, String>,
    /// Offset of its key.
    at: usize,
    marks: MarkSet,
    /// The problems found in the entry (dropped if the entry repeats an earlier one).
    problems: std::ops::Range<usize>,
}

impl Listed {
    fn name(&self) -> &str {
        match &self.name {
            Ok(a) => a.as_str(),
            Err(n) => n,
        }
    }
}

/// What one group's sections say, gathered as they are read, checked at the group's end.
#[derive(Default)]
pub(super) struct GroupBuild {
    members_at: Option<usize>,
    marks_at: Option<usize>,
    listed: Vec<Listed>,
    /// (account, mark) from `marks`.
    pairs: Vec<(Account, Mark)>,
    /// Where each mark is first used in `members`, and in `marks`.
    uses_in_members: BTreeMap<Mark, usize>,
    uses_in_marks: BTreeMap<Mark, usize>,
    /// Accounts to warn about: account, 0 in `members` or 1 in `marks`, offset.
    unusual: Vec<(Account, u8, usize)>,
}

impl GroupBuild {
    /// The group's desired marks, after the checks that need the whole group (repeated
    /// members, unusual accounts warned once, the service's limits), in the order the YAML
    /// reader makes them (`members` before `marks`, whatever the order written).
    pub(super) fn finish(self, r: &mut Reader<'_>, id: &GroupId, group_at: usize) -> DesiredGroup {
        let GroupBuild {
            listed,
            pairs,
            uses_in_members,
            uses_in_marks,
            mut unusual,
            ..
        } = self;
        let mut out = DesiredGroup::default();
        // Repeated accounts in `members`: the first stands, each repeat is one error.
        let mut order: Vec<usize> = (0..listed.len()).collect();
        order.sort_by(|&x, &y| listed[x].name().cmp(listed[y].name()));
        let mut repeated = vec![false; listed.len()];
        for run in order.chunk_by(|&x, &y| listed[x].name() == listed[y].name()) {
            let first = run[0];
            for &i in &run[1..] {
                repeated[i] = true;
                for p in &mut r.pending[listed[i].problems.clone()] {
                    p.dropped = true;
                }
                r.repeat(
                    listed[i].at,
                    listed[first].at,
                    format!(
                        "duplicate key: account {:?} is listed again in `members`",
                        listed[i].name()
                    ),
                );
            }
        }
        let mut members: Vec<(Account, MarkSet)> = listed
            .into_iter()
            .zip(repeated)
            .filter_map(|(l, repeat)| match l.name {
                Ok(a) if !repeat => Some((a, l.marks)),
                _ => None,
            })
            .collect();
        members.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        out.members = members.into_iter().collect();
        for (a, m) in pairs {
            out.members.entry(a).or_default().insert(m);
        }
        // Each unusual account warned once, where the YAML reader warns: its first place in
        // `members`, else in `marks`.
        unusual.sort_by(|x, y| (&x.0, x.1, x.2).cmp(&(&y.0, y.1, y.2)));
        unusual.dedup_by(|later, first| later.0 == first.0);
        unusual.sort_by_key(|u| (u.1, u.2));
        for (a, _, at) in unusual {
            r.pending.push(Pending {
                at,
                message: unusual_account(&a),
                first: None,
                warning: true,
                dropped: false,
            });
        }
        // The service's limits, checked before any call.
        let mut uses = uses_in_members;
        for (m, at) in uses_in_marks {
            uses.entry(m).or_insert(at);
        }
        for (at, message) in
            crate::desired::check::limit_problems(id, &uses, &out, group_at, |at| *at)
        {
            r.error(at, message);
        }
        out
    }
}

pub(super) struct GroupVisitor<'r, 't, 'g> {
    pub(super) r: &'r mut Reader<'t>,
    pub(super) g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for GroupVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with `members` and/or `marks`")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let GroupVisitor { r, g } = self;
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let members = match name.as_deref() {
                Some("members") => true,
                Some("marks") => false,
                Some(other) => {
                    r.error(
                        at,
                        format!("unknown key `{other}`; expected `members` or `marks`"),
                    );
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let (section, slot) = if members {
                ("members", &mut g.members_at)
            } else {
                ("marks", &mut g.marks_at)
            };
            if let Some(first) = *slot {
                r.repeat(at, first, format!("duplicate key `{section}`"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            *slot = Some(at);
            let value_at = r.value_after(end);
            let shape = if members {
                map.next_value_seed(Any(MembersVisitor {
                    r: &mut *r,
                    g: &mut *g,
                }))?
            } else {
                map.next_value_seed(Any(MarksVisitor {
                    r: &mut *r,
                    g: &mut *g,
                }))?
            };
            let what = if members {
                "`members` must be a mapping of account to its marks (such as `host: [500, 1000]`)"
            } else {
                "`marks` must be a mapping of mark to its accounts (such as `1001: [student9]`)"
            };
            match shape {
                Shape::Expected => {}
                Shape::Null => r.error(
                    value_at,
                    format!("`{section}` is null, which may be a half-written file; for none, write {{}}"),
                ),
                Shape::Other(kind) => r.error(value_at, format!("{what}, found {kind}")),
            }
        }
        Ok(Shape::Expected)
    }
}

struct MembersVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for MembersVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of account to its marks")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let MembersVisitor { r, g } = self;
        if let Some(n) = map.size_hint() {
            g.listed.reserve(n);
        }
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let Some(name) = name else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let start = r.pending.len();
            let account = match Account::new(&name) {
                Ok(a) => {
                    if !a.is_conventional() {
                        g.unusual.push((a.clone(), 0, at));
                    }
                    Ok(a)
                }
                Err(e) => {
                    r.error(at, e);
                    Err(name.clone().into_owned())
                }
            };
            let value_at = r.value_after(end);
            let mut marks = MarkSet::new();
            let shape = map.next_value_seed(Any(MarkListVisitor {
                r: &mut *r,
                marks: &mut marks,
                uses: &mut g.uses_in_members,
            }))?;
            if !matches!(shape, Shape::Expected) {
                r.error(
                    value_at,
                    format!(
                        "the marks of {name:?} must be a list such as [1000], found {}",
                        shape.kind()
                    ),
                );
            }
            g.listed.push(Listed {
                name: account,
                at,
                marks,
                problems: start..r.pending.len(),
            });
        }
        Ok(Shape::Expected)
    }
}

struct MarkListVisitor<'r, 't, 'u> {
    r: &'r mut Reader<'t>,
    marks: &'u mut MarkSet,
    uses: &'u mut BTreeMap<Mark, usize>,
}

impl<'de> Visitor<'de> for MarkListVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of marks")
    }
    other_scalars!();
    not_a_mapping!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let MarkListVisitor { r, marks, uses } = self;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let raw = raw.get();
            let at = r.offset(raw);
            match mark_item(raw) {
                Ok(m) => {
                    if !marks.insert(m) {
                        r.error(at, format!("mark {m} is listed twice for this account"));
                    }
                    uses.entry(m).or_insert(at);
                }
                Err(message) => r.error(at, message),
            }
        }
        Ok(Shape::Expected)
    }
}

struct MarksVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for MarksVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of mark to its accounts")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let MarksVisitor { r, g } = self;
        let mut seen: HashMap<Mark, usize> = HashMap::new();
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let Some(name) = name else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let mark = if is_decimal(&name) {
                mark_number(&name)
            } else {
                Err("a mark must be an integer, found a string".to_string())
            };
            let mark = match mark {
                Ok(m) => {
                    if let Some(&first) = seen.get(&m) {
                        r.repeat(
                            at,
                            first,
                            format!("duplicate key: mark {m} is listed again in `marks`"),
                        );
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    seen.insert(m, at);
                    g.uses_in_marks.entry(m).or_insert(at);
                    Some(m)
                }
                Err(message) => {
                    r.error(at, message);
                    None
                }
            };
            let value_at = r.value_after(end);
            let shape = map.next_value_seed(Any(AccountListVisitor {
                r: &mut *r,
                g: &mut *g,
                mark,
            }))?;
            if !matches!(shape, Shape::Expected) {
                let whose = mark.map(|m| format!(" of mark {m}")).unwrap_or_default();
                r.error(
                    value_at,
                    format!(
                        "the accounts{whose} must be a list such as [student9], found {}",
                        shape.kind()
                    ),
                );
            }
        }
        Ok(Shape::Expected)
    }
}

struct AccountListVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
    mark: Option<Mark>,
}

impl<'de> Visitor<'de> for AccountListVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of accounts")
    }
    other_scalars!();
    not_a_mapping!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let AccountListVisitor { r, g, mark } = self;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let raw = raw.get();
            let at = r.offset(raw);
            let name = match account_item(raw) {
                Ok(name) => name,
                Err(message) => {
                    r.error(at, message);
                    continue;
                }
            };
            if seen.contains(&name) {
                r.error(
                    at,
                    format!("account {name:?} is listed twice under this mark"),
                );
                continue;
            }
            match Account::new(&name) {
                Ok(a) => {
                    if !a.is_conventional() {
                        g.unusual.push((a.clone(), 1, at));
                    }
                    if let Some(m) = mark {
                        g.pairs.push((a, m));
                    }
                }
                Err(e) => r.error(at, e),
            }
            seen.insert(name);
        }
        Ok(Shape::Expected)
    }
}

/// An account in a list, as written: a string's text, or a number or `true` as written.
fn account_item(raw: &str) -> Result<Cow<'_, str>, String> {
    match raw.as_bytes()[0] {
        b'"' => string(raw),
        b'n' => Err(
            "`null` is no value, not an account; write \"null\" in quotes if that is really its name"
                .into(),
        ),
        b'[' => Err("an account must be a string, found a list".into()),
        b'{' => Err("an account must be a string, found a mapping".into()),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

/// A mark in a list: a plain decimal integer.
fn mark_item(raw: &str) -> Result<Mark, String> {
    match raw.as_bytes()[0] {
        b'"' => match string(raw) {
            Ok(s) if is_decimal(&s) => Err(format!(
                "a mark must be an integer, found a string; write {s} without quotes"
            )),
            _ => Err("a mark must be an integer, found a string".into()),
        },
        b'n' => Err("a mark must be an integer, found nothing (null)".into()),
        b't' | b'f' => Err("a mark must be an integer, found a boolean".into()),
        b'[' => Err("a mark must be an integer, found a list".into()),
        b'{' => Err("a mark must be an integer, found a mapping".into()),
        _ => mark_number(raw),
    }
}

/// A number as written where a mark belongs (or a decimal key of `marks`).
fn mark_number(text: &str) -> Result<Mark, String> {
    if let Some(mark) = crate::desired::check::plain_decimal_mark(text) {
        return mark;
    }
    let meant = text.parse::<i128>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e20)
            .map(|f| f as i128)
    });
    match meant {
        Some(n) => Err(not_plain_decimal(text, n)),
        None => Err(format!("mark {text} is not an integer")),
    }
}
