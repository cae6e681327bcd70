//! The domain vocabulary: group IDs, accounts, marks, mark sets, and the service's limits.
//!
//! Every type here validates on construction, so code that holds a [`Mark`] or an [`Account`]
//! never re-checks it. Nothing here does I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// An audio-video group ID such as `@TGS#a6I4ZUUGO`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(Box<str>);

impl GroupId {
    /// Validates a group ID: non-empty, no control characters.
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("group ID must not be empty".into());
        }
        if s.chars().any(char::is_control) {
            return Err(format!("group ID {s:?} contains a control character"));
        }
        Ok(GroupId(s.into()))
    }

    /// The ID as the service spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A member account (UserID): non-empty, at most 32 bytes, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Account(Box<str>);

impl Account {
    /// Validates an account name against the service's rules.
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("account must not be empty".into());
        }
        if s.len() > MAX_ACCOUNT_BYTES {
            return Err(format!(
                "account {s:?} is {} bytes long; the service allows at most {MAX_ACCOUNT_BYTES}",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!("account {s:?} contains a control character"));
        }
        Ok(Account(s.into()))
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

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// A small sorted set of marks. Members carry at most a handful of marks, so a sorted vector
/// beats a tree in both memory and speed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarkSet(Vec<Mark>);

impl MarkSet {
    /// The empty set.
    pub const fn new() -> Self {
        MarkSet(Vec::new())
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

impl FromIterator<Mark> for MarkSet {
    fn from_iter<I: IntoIterator<Item = Mark>>(iter: I) -> Self {
        let mut v: Vec<Mark> = iter.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn accounts_are_bounded_and_non_empty() {
        assert!(Account::new("").is_err());
        assert!(Account::new(&"a".repeat(32)).is_ok());
        assert!(Account::new(&"a".repeat(33)).is_err());
        // 11 three-byte characters are 33 bytes: the limit is in bytes, not characters.
        assert!(Account::new(&"é".repeat(16)).is_ok());
        assert!(Account::new(&"語".repeat(11)).is_err());
        assert!(Account::new("a\nb").is_err());
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
}
