//! Reading: `get_members` listings followed through every page, and a group's live marks.

use super::*;

/// The most pages one listing may take. The service lists at most 1000 members, so a listing
/// that keeps going is a service (or emulator) fault, not a long list.
pub const MAX_LISTING_PAGES: u32 = 2000;

/// Every page of one `get_members` listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveListing {
    /// The listed accounts, in the service's order.
    pub accounts: Vec<String>,
    /// How many calls it took.
    pub pages: u32,
    /// The client clock when the first page was requested (unix seconds).
    pub read_at: UnixTime,
}

/// A group's live facts: the online listing and one listing per mark asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveGroup {
    /// No `Mark` filter.
    pub online: LiveListing,
    /// Per mark, its holders.
    pub marks: std::collections::BTreeMap<u32, LiveListing>,
}

impl LiveGroup {
    /// Calls the reads took.
    pub fn calls(&self) -> u64 {
        u64::from(self.online.pages) + self.marks.values().map(|l| u64::from(l.pages)).sum::<u64>()
    }
}

/// Why a group's live marks could not be read. A failed read is never "nobody there".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// `get_members` refused for lack of permission: the edition or the console switch.
    #[error(
        "reading the online members of group {group} was refused (service error {code}: {info}): \
         reading live marks needs the top (Ultimate) edition and the console switch \
         \"list of online audio-video group members\" turned on in the Chat console \
         (10007 also answers for a group that is not an audio-video group)"
    )]
    NoPermission {
        /// The group being read.
        group: String,
        /// 10059 (edition) or 10007 (permission).
        code: i64,
        /// The service's `ErrorInfo`.
        info: String,
    },
    /// The call failed (after retries, or fatally).
    #[error("reading the online members of group {group}: {source}")]
    Call {
        /// The group being read.
        group: String,
        /// Why.
        source: CallError,
    },
    /// `NextTimestamp` repeated, or the listing ran past [`MAX_LISTING_PAGES`].
    #[error(
        "reading the online members of group {group}: the listing did not end after {pages} \
         page(s) (NextTimestamp {cursor}); the answer is not trusted"
    )]
    Paging {
        /// The group being read.
        group: String,
        /// Pages read.
        pages: u32,
        /// The offending cursor.
        cursor: u64,
    },
}

impl ListError {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ListError::NoPermission { .. } => "no_permission",
            ListError::Call { source, .. } => source.metric_label(),
            ListError::Paging { .. } => "paging",
        }
    }

    /// Whether every other read would fail the same way, so the whole refresh should stop.
    pub fn is_fatal(&self) -> bool {
        match self {
            ListError::NoPermission { .. } => true,
            ListError::Call { source, .. } => source.is_fatal(),
            ListError::Paging { .. } => false,
        }
    }
}

impl Client {
    /// Reads every page of `get_members` for `group` (only holders of `mark` when given),
    /// following `NextTimestamp` until 0, each page through the shared rate limiter with the
    /// usual retries. 10059 and 10007 become [`ListError::NoPermission`].
    pub async fn list_members(
        &self,
        group: &str,
        mark: Option<u32>,
    ) -> Result<LiveListing, ListError> {
        let mut listing = LiveListing {
            read_at: self.inner.clock.now(),
            ..LiveListing::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = 0;
        loop {
            let req = GetMembersRequest {
                group_id: group.to_owned(),
                timestamp: cursor,
                mark,
            };
            let page = self.get_members(&req).await.map_err(|e| match e {
                CallError::Fatal { code, info } if matches!(code, 10007 | 10059) => {
                    ListError::NoPermission {
                        group: group.to_owned(),
                        code,
                        info,
                    }
                }
                source => ListError::Call {
                    group: group.to_owned(),
                    source,
                },
            })?;
            listing.pages += 1;
            listing
                .accounts
                .extend(page.member_list.into_iter().map(|m| m.account));
            cursor = page.next_timestamp;
            if cursor == 0 {
                return Ok(listing);
            }
            if !seen.insert(cursor) || listing.pages >= MAX_LISTING_PAGES {
                return Err(ListError::Paging {
                    group: group.to_owned(),
                    pages: listing.pages,
                    cursor,
                });
            }
        }
    }

    /// Reads a group's live facts: the online listing once, then one listing per mark, in
    /// order. The first failure ends the read: a partly read group is not returned.
    pub async fn read_live(&self, group: &str, marks: &[u32]) -> Result<LiveGroup, ListError> {
        let online = self.list_members(group, None).await?;
        let mut out = LiveGroup {
            online,
            marks: std::collections::BTreeMap::new(),
        };
        for &m in marks {
            let listing = self.list_members(group, Some(m)).await?;
            out.marks.insert(m, listing);
        }
        Ok(out)
    }
}
