//! The domain vocabulary: group IDs, accounts, marks, mark sets, and the service's limits.
//!
//! Every type here validates on construction, so code that holds a [`Mark`] or an [`Account`]
//! never re-checks it. Nothing here does I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The service accepts at most this many accounts in one `modify_user_info` call.
pub const MAX_MEMBERS_PER_CALL: usize = 500;
/// The service allows at most this many distinct marks in one group.
pub const MAX_MARKS_PER_GROUP: usize = 10;
/// The service allows each mark to be carried by at most this many members of one group.
pub const MAX_MEMBERS_PER_MARK: usize = 1000;
/// Accounts (UserIDs) are at most this many bytes long.
pub const MAX_ACCOUNT_BYTES: usize = 32;
/// Mark 500 keeps a member "always online" for this long after it was last set.
pub const MARK_500_LIFETIME_SECS: i64 = 72 * 3600;

/// Seconds since the Unix epoch. The pure core receives time as this value; it never reads a clock.
pub type UnixTime = i64;

/// An age such as `61h`, `45m` or `30s`: hours are what matters for mark 500's 72 h.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 2 * 3600 {
        format!("{}h", secs / 3600)
    } else if secs >= 120 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// What the validated string newtypes share: serialized as the plain string without a copy
/// (state files hold a million of them), `TryFrom<String>` through the type's `check` (which
/// `serde(try_from)` deserializes through), and `Display` as written.
macro_rules! validated_string {
    ($t:ident) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $t::check(&s)?;
                Ok($t(s.into_boxed_str()))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Custom group IDs are at most this many bytes long (the vendor's rule; service-assigned
/// `@TGS#` IDs are shorter).
pub const MAX_GROUP_ID_BYTES: usize = 48;

/// An audio-video group ID such as `@TGS#a6I4ZUUGO`: printable ASCII (0x20-0x7e), at most 48
/// bytes, no leading or trailing space (the vendor's rule for custom IDs, which service-assigned
/// `@TGS#` IDs also follow). Deserializes through these checks, so a state file cannot smuggle in
/// an ID a desired file could not.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct GroupId(Box<str>);

validated_string!(GroupId);

impl GroupId {
    /// Validates a group ID against the vendor's rule.
    pub fn new(s: &str) -> Result<Self, String> {
        Self::check(s)?;
        Ok(GroupId(s.into()))
    }

    fn check(s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("group ID must not be empty".into());
        }
        if let Some((at, c)) = s.char_indices().find(|(_, c)| !(' '..='~').contains(c)) {
            let hint = if is_forbidden_in_names(c) {
                " (an invisible or separator character, probably pasted by accident)"
            } else {
                ""
            };
            return Err(format!(
                "group ID {} contains {} at byte {at}{hint}; a group ID is printable ASCII (0x20-0x7e)",
                quote(s),
                describe_char(c)
            ));
        }
        if s.starts_with(' ') || s.ends_with(' ') {
            return Err(format!(
                "group ID {} has a leading or trailing space; the service would not find it",
                quote(s)
            ));
        }
        if s.len() > MAX_GROUP_ID_BYTES {
            return Err(format!(
                "group ID {} is {} bytes long; the service allows at most {MAX_GROUP_ID_BYTES}",
                quote(s),
                s.len()
            ));
        }
        Ok(())
    }

    /// The ID as the service spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member account (UserID): non-empty, at most 32 bytes, no whitespace, control, invisible or
/// separator characters. Deserializes through these checks (state files included).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Account(Box<str>);

validated_string!(Account);

impl Account {
    /// Validates an account name against the service's rules, reusing the string's buffer.
    pub fn from_string(s: String) -> Result<Self, String> {
        Self::try_from(s)
    }

    /// Validates an account name against the service's rules.
    pub fn new(s: &str) -> Result<Self, String> {
        Self::check(s)?;
        Ok(Account(s.into()))
    }

    fn check(s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("account must not be empty".into());
        }
        if s.len() > MAX_ACCOUNT_BYTES {
            return Err(format!(
                "account {s:?} is {} bytes long; the service allows at most {MAX_ACCOUNT_BYTES}",
                s.len()
            ));
        }
        // An ASCII name (nearly every one) is checked a byte at a time: the only ASCII
        // characters `is_forbidden_in_names` refuses are the controls and the space, that is
        // every byte that is not graphic (`ascii_bytes_are_refused_exactly_as_characters`).
        let forbidden = if s.is_ascii() {
            s.bytes()
                .position(|b| !b.is_ascii_graphic())
                .map(|at| (at, char::from(s.as_bytes()[at])))
        } else {
            s.char_indices().find(|&(_, c)| is_forbidden_in_names(c))
        };
        if let Some((at, c)) = forbidden {
            let hint = if is_separator(c) || c.is_whitespace() {
                "; two accounts run together? separate accounts with a comma: [alice, bob]"
            } else {
                "; it is invisible, probably pasted by accident: retype the account"
            };
            return Err(format!(
                "account {} contains {} at byte {at}{hint}",
                quote(s),
                describe_char(c)
            ));
        }
        Ok(())
    }

    /// Whether the account sticks to the characters the official libraries document
    /// (`[a-zA-Z0-9_-]`). Others exist in the wild, so this is a warning, not an error.
    pub fn is_conventional(&self) -> bool {
        self.0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// The account as the service spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name quoted for a message, cut to a readable length (a name can be a whole pasted line).
fn quote(s: &str) -> String {
    const MAX_CHARS: usize = 60;
    if s.chars().count() <= MAX_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

/// Whether `c` never belongs in an account or a group ID: whitespace, control characters,
/// invisible format characters (zero-width, byte order mark, soft hyphen, bidi controls) and
/// list separators other than the ASCII comma (full-width and ideographic commas...).
pub fn is_forbidden_in_names(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible(c) || is_separator(c)
}

/// Unicode format characters (category Cf) and other characters that render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}'
        | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Characters that separate list items in some script or input method.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        '\u{060C}'
            | '\u{3001}'
            | '\u{FE10}'
            | '\u{FE11}'
            | '\u{FE50}'
            | '\u{FE51}'
            | '\u{FF0C}'
            | '\u{FF1B}'
            | '\u{FF64}'
            | '\u{037E}'
            | '\u{061B}'
            | '\u{FE54}'
    )
}

/// `U+FF0C FULLWIDTH COMMA`: a character named so that the user can find it.
pub fn describe_char(c: char) -> String {
    let name = match c {
        ' ' => "SPACE",
        '\t' => "CHARACTER TABULATION (a tab)",
        '\n' => "LINE FEED (a line break)",
        '\r' => "CARRIAGE RETURN",
        '\u{00A0}' => "NO-BREAK SPACE",
        '\u{00AD}' => "SOFT HYPHEN",
        '\u{1680}' => "OGHAM SPACE MARK",
        '\u{2000}'..='\u{200A}' => "SPACE (a typographic space)",
        '\u{200B}' => "ZERO WIDTH SPACE",
        '\u{200C}' => "ZERO WIDTH NON-JOINER",
        '\u{200D}' => "ZERO WIDTH JOINER",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        '\u{202A}'..='\u{202E}' => "a bidirectional formatting character",
        '\u{202F}' => "NARROW NO-BREAK SPACE",
        '\u{205F}' => "MEDIUM MATHEMATICAL SPACE",
        '\u{2060}' => "WORD JOINER",
        '\u{2066}'..='\u{2069}' => "a bidirectional isolate character",
        '\u{3000}' => "IDEOGRAPHIC SPACE",
        '\u{3001}' => "IDEOGRAPHIC COMMA",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE (a byte order mark)",
        '\u{FF0C}' => "FULLWIDTH COMMA",
        '\u{FF1B}' => "FULLWIDTH SEMICOLON",
        '\u{FF64}' => "HALFWIDTH IDEOGRAPHIC COMMA",
        '\u{FE50}' => "SMALL COMMA",
        '\u{FE51}' => "SMALL IDEOGRAPHIC COMMA",
        '\u{060C}' => "ARABIC COMMA",
        c if c.is_control() => "a control character",
        c if c.is_whitespace() => "a space character",
        c if is_invisible(c) => "an invisible formatting character",
        c if is_separator(c) => "a separator character",
        _ => "",
    };
    if name.is_empty() {
        format!("U+{:04X} {c:?}", u32::from(c))
    } else {
        format!("U+{:04X} {name}", u32::from(c))
    }
}

/// A member mark: 500 (always online), 600 (hidden), or any integer >= 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Mark(u32);

impl Mark {
    /// The special mark that keeps a member online for 72 hours and must be renewed.
    pub const ALWAYS_ONLINE: Mark = Mark(500);
    /// The special mark that hides a member from the online list.
    pub const HIDDEN: Mark = Mark(600);

    /// Validates a mark number.
    pub fn new(n: u64) -> Result<Self, String> {
        match n {
            500 | 600 => Ok(Mark(n as u32)),
            1000..=0xFFFF_FFFF => Ok(Mark(n as u32)),
            _ => Err(format!(
                "mark {n} is not allowed: a mark is an integer >= 1000, or the special 500 or 600"
            )),
        }
    }

    /// The mark's number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether this is mark 500, which expires and must be renewed.
    pub fn expires(self) -> bool {
        self == Mark::ALWAYS_ONLINE
    }
}

impl TryFrom<u64> for Mark {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        Mark::new(n)
    }
}

impl From<Mark> for u64 {
    fn from(m: Mark) -> u64 {
        u64::from(m.0)
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A small sorted set of marks. Members carry a handful of marks at most (the service allows ten
/// per group), so a sorted inline vector beats a tree: up to four marks need no allocation, which
/// matters at a million members.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<Mark>", into = "Vec<Mark>")]
pub struct MarkSet(SmallVec<[Mark; 4]>);

impl MarkSet {
    /// The empty set.
    pub const fn new() -> Self {
        MarkSet(SmallVec::new_const())
    }

    /// Adds a mark; returns whether it was new.
    pub fn insert(&mut self, m: Mark) -> bool {
        match self.0.binary_search(&m) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, m);
                true
            }
        }
    }

    /// Removes a mark; returns whether it was there.
    pub fn remove(&mut self, m: Mark) -> bool {
        match self.0.binary_search(&m) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the set holds `m`.
    pub fn contains(&self, m: Mark) -> bool {
        self.0.binary_search(&m).is_ok()
    }

    /// The marks in ascending order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Mark> + '_ {
        self.0.iter().copied()
    }

    /// How many marks the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The marks as a sorted slice.
    pub fn as_slice(&self) -> &[Mark] {
        &self.0
    }
}

impl From<Vec<Mark>> for MarkSet {
    fn from(v: Vec<Mark>) -> Self {
        v.into_iter().collect()
    }
}

impl From<MarkSet> for Vec<Mark> {
    fn from(s: MarkSet) -> Self {
        s.0.into_vec()
    }
}

impl FromIterator<Mark> for MarkSet {
    fn from_iter<I: IntoIterator<Item = Mark>>(iter: I) -> Self {
        let mut v: SmallVec<[Mark; 4]> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        MarkSet(v)
    }
}

impl Extend<Mark> for MarkSet {
    fn extend<I: IntoIterator<Item = Mark>>(&mut self, iter: I) {
        for m in iter {
            self.insert(m);
        }
    }
}

impl fmt::Display for MarkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Short constructors of valid IDs for unit tests (panic on an invalid one).
#[cfg(test)]
pub(crate) mod test_ids {
    use super::{Account, GroupId, Mark};

    /// A group ID.
    pub(crate) fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }
    /// An account.
    pub(crate) fn a(s: &str) -> Account {
        Account::new(s).unwrap()
    }
    /// A mark.
    pub(crate) fn m(n: u64) -> Mark {
        Mark::new(n).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_unit_that_matters() {
        assert_eq!(age(61 * 3600 + 59), "61h");
        assert_eq!(age(2 * 3600), "2h");
        assert_eq!(age(119 * 60), "119m");
        assert_eq!(age(5), "5s");
        assert_eq!(age(-5), "0s");
    }

    #[test]
    fn marks_follow_the_service_rules() {
        for ok in [500, 600, 1000, 1001, 4_294_967_295] {
            assert!(Mark::new(ok).is_ok(), "{ok}");
        }
        for bad in [0, 1, 499, 501, 599, 601, 999, 4_294_967_296] {
            assert!(Mark::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ascii_bytes_are_refused_exactly_as_characters() {
        // `Account::check` tests ASCII names a byte at a time; it must refuse exactly the
        // characters the general test refuses, at the same place, with the same message.
        for b in 0u8..=0x7f {
            let c = char::from(b);
            let name = format!("ab{c}cd");
            assert_eq!(
                Account::new(&name).is_err(),
                is_forbidden_in_names(c),
                "byte {b:#04x}"
            );
            if let Err(e) = Account::new(&name) {
                assert!(e.contains("at byte 2"), "{b:#04x}: {e}");
                assert!(e.contains(&describe_char(c)), "{b:#04x}: {e}");
            }
        }
    }

    #[test]
    fn accounts_are_bounded_and_non_empty() {
        assert!(Account::new("").is_err());
        assert!(Account::new(&"a".repeat(32)).is_ok());
        assert!(Account::new(&"a".repeat(33)).is_err());
        // 11 three-byte characters are 33 bytes: the limit is in bytes, not characters.
        assert!(Account::new(&"é".repeat(16)).is_ok());
        assert!(Account::new(&"語".repeat(11)).is_err());
        assert!(Account::new("a\nb").is_err());
        // Written as is, whatever YAML would resolve them to.
        for ok in [
            "007",
            "+8613800138000",
            "0x1F",
            "1_000",
            "y",
            "no",
            "~",
            ".inf",
        ] {
            assert!(Account::new(ok).is_ok(), "{ok}");
        }
        assert!(Account::new("teacher_10-x").unwrap().is_conventional());
        assert!(!Account::new("név").unwrap().is_conventional());
    }

    #[test]
    fn mark_sets_stay_sorted_and_unique() {
        let mut s: MarkSet = [
            Mark::new(1001).unwrap(),
            Mark::ALWAYS_ONLINE,
            Mark::new(1001).unwrap(),
        ]
        .into_iter()
        .collect();
        assert_eq!(s.to_string(), "500,1001");
        assert!(s.insert(Mark::HIDDEN));
        assert!(!s.insert(Mark::HIDDEN));
        assert_eq!(s.to_string(), "500,600,1001");
        assert!(s.remove(Mark::ALWAYS_ONLINE));
        assert!(!s.contains(Mark::ALWAYS_ONLINE));
    }

    #[test]
    fn separators_whitespace_and_invisible_characters_in_accounts_are_errors() {
        for (bad, named) in [
            ("alice bob", "U+0020 SPACE"),
            ("alice\u{FF0C}bob", "U+FF0C FULLWIDTH COMMA"),
            ("alice\u{3001}bob", "U+3001 IDEOGRAPHIC COMMA"),
            ("alice\u{3000}bob", "U+3000 IDEOGRAPHIC SPACE"),
            ("alice\u{00A0}", "U+00A0 NO-BREAK SPACE"),
            ("al\u{200B}ice", "U+200B ZERO WIDTH SPACE"),
            ("\u{FEFF}alice", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
            ("al\u{00AD}ice", "U+00AD SOFT HYPHEN"),
            ("alice\u{202E}", "U+202E"),
            ("alice\u{2028}bob", "U+2028 LINE SEPARATOR"),
            ("alice\u{2029}bob", "U+2029 PARAGRAPH SEPARATOR"),
            ("alice\tbob", "U+0009"),
        ] {
            let e = Account::new(bad).expect_err(bad);
            assert!(e.contains(named), "{bad:?}: {e}");
        }
        let e = Account::new("alice\u{FF0C}bob").unwrap_err();
        assert!(e.contains("separate accounts with a comma"), "{e}");
        // Other printable characters stay allowed (a warning elsewhere).
        assert!(Account::new("a.b@c").is_ok());
    }

    #[test]
    fn group_ids_follow_the_vendor_rule_for_custom_ids() {
        assert!(GroupId::new("@TGS#a6I4ZUUGO").is_ok());
        assert!(GroupId::new("room 1, floor 2").is_ok());
        assert!(GroupId::new(&"g".repeat(48)).is_ok());
        let e = GroupId::new(&"g".repeat(49)).unwrap_err();
        assert!(e.contains("at most 48"), "{e}");
        for (bad, named) in [
            ("群组", "U+7FA4"),
            ("g\u{FF0C}h", "U+FF0C FULLWIDTH COMMA"),
            ("g\u{200B}", "U+200B ZERO WIDTH SPACE"),
            ("g\th", "U+0009"),
            ("caf\u{e9}", "U+00E9"),
        ] {
            let e = GroupId::new(bad).expect_err(bad);
            assert!(
                e.contains(named) && e.contains("printable ASCII"),
                "{bad:?}: {e}"
            );
        }
        for bad in [" g", "g ", " "] {
            let e = GroupId::new(bad).expect_err(bad);
            assert!(e.contains("leading or trailing space"), "{bad:?}: {e}");
        }
        assert!(GroupId::new("").is_err());
    }

    #[test]
    fn ids_deserialize_through_their_checks() {
        let ok: GroupId = serde_json::from_str("\"@TGS#a\"").unwrap();
        assert_eq!(ok.as_str(), "@TGS#a");
        assert!(serde_json::from_str::<GroupId>("\" g\"").is_err());
        assert!(serde_json::from_str::<Account>("\"alice bob\"").is_err());
        assert!(serde_json::from_str::<Account>("\"\"").is_err());
        let a: Account = serde_json::from_str("\"007\"").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"007\"");
    }
}
