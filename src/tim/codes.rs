//! The service's error codes: what each means and what marksync does about it
//! (`reference/tencent-im-api.md` sections 3 and 6, SPEC section 7).
//!
//! Architecture invariant: this is the only place that knows which code means what. The client
//! acts on [`classify`]; messages and the README's troubleshooting table use [`describe`].

/// What a caller should do about an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The service is shedding load: back off, retry, and slow the shared rate limiter down
    /// (60007, 60011, 60018, 60019, 10006).
    RateLimited,
    /// A transient server-side failure: back off and retry (10002 system error, 60008 timeout).
    Retry,
    /// The UserSig expired or could not be parsed: generate a fresh one and retry once
    /// (70001, 70003).
    RegenerateSig,
    /// Signature failure and rate limit together (70050): the service asks for a minute's pause.
    SigAndRateLimit,
    /// A configuration error that every later call will repeat too (wrong key, SDKAppID, region,
    /// admin, edition, IP allow-list...). Never retried, and never read as "nothing is there":
    /// the run stops.
    Fatal,
    /// The group does not exist, was dissolved, or its ID is invalid (10010, 10015): the group
    /// has no marks left.
    GroupGone,
    /// Anything else: this call failed and is not retried, but other calls may still succeed.
    /// This includes the undocumented code for "every account in the call is offline or does
    /// not exist" (reference section 3), which the apply layer treats as "still pending".
    Rejected,
}

/// Sorts an `ErrorCode` (non-zero) into what to do about it.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        60007 | 60011 | 60018 | 60019 | 10006 => ErrorClass::RateLimited,
        10002 | 60008 => ErrorClass::Retry,
        70001 | 70003 => ErrorClass::RegenerateSig,
        70050 => ErrorClass::SigAndRateLimit,
        10001 | 10007 | 10059 | 60006 | 60010 | 60016 | 60020 | 60021 | 70009 | 70013 | 70014
        | 70016 | 70020 => ErrorClass::Fatal,
        10010 | 10015 => ErrorClass::GroupGone,
        _ => ErrorClass::Rejected,
    }
}

/// What `code` means if the reference gives it a meaning other than "every account in the call
/// is offline or does not exist" (the one meaning `offline_error_codes` may list): its
/// description. `None` for the documented default 10004, for 10019 (the account does not exist:
/// that case itself), and for undocumented codes. Listing a code with another meaning would read
/// that failure (a wrong key, a rate limit, a dissolved group) as "the members are offline":
/// sets left pending forever and clears taken as done.
pub fn offline_conflict(code: i64) -> Option<&'static str> {
    match code {
        10004 | 10019 => None,
        _ if classify(code) != ErrorClass::Rejected => Some(describe(code)),
        _ if describe(code) != describe(i64::MIN) => Some(describe(code)),
        _ => None,
    }
}

/// A short explanation of a code for people: what it means and what to do. Used in error
/// messages and in the README's troubleshooting table.
pub fn describe(code: i64) -> &'static str {
    match code {
        0 => "success",
        10001 => {
            "not logged in: the admin identifier or UserSig was refused; check identifier, secret key and region"
        }
        10002 => "system error on the service side; retried automatically",
        10003 => "invalid command: the request path is wrong (a marksync bug, please report it)",
        10004 => {
            "invalid parameter: the request was refused as malformed (check group ID, accounts and marks)"
        }
        10006 => "rate limited by the group service; retried with backoff and a slower pace",
        10007 => {
            "insufficient permission: the identifier is not allowed to do this; use an App admin account"
        }
        10008 => "bad request signature; check the secret key and identifier",
        10010 => "the group does not exist or was dissolved; its recorded marks are dropped",
        10011 => "the service could not parse the JSON body (a marksync bug, please report it)",
        10015 => "invalid group ID; check the group ID in the desired files",
        10019 => "the account does not exist",
        10059 => {
            "this feature needs the top (Ultimate) edition and the console switch for the list of online audio-video group members"
        }
        60006 => "the SDKAppID is invalid; check sdkappid in the config",
        60007 => "rate limited; retried with backoff and a slower pace",
        60008 => "the service timed out; retried automatically",
        60010 => {
            "the identifier is not an App admin account; set an admin in the console or change identifier"
        }
        60011 => {
            "rate limited (per SDKAppID); retried with backoff; lower max_calls_per_second if it persists"
        }
        60016 => "the SDKAppID is disabled; check the application's status in the console",
        60018 => "rate limited; retried with backoff; lower max_calls_per_second if it persists",
        60019 => "rate limited; retried with backoff; lower max_calls_per_second if it persists",
        60020 => "the package has expired; renew the Chat package in the console",
        60021 => "this source IP is not allowed by the console's IP allow-list; add it there",
        70001 => {
            "the UserSig expired; marksync regenerates it (if this persists, the machine's clock is wrong)"
        }
        70003 => "the UserSig could not be parsed; marksync regenerates it",
        70009 => "UserSig signature check failed: wrong secret key, SDKAppID or region",
        70013 => "the UserSig's identifier does not match the request's identifier",
        70014 => "the UserSig's SDKAppID does not match the request's SDKAppID",
        70016 => "the secret key is not known in this region: check region and secret key",
        70020 => "the SDKAppID is not known in this region: check region and sdkappid",
        70050 => "too many UserSig failures: the service asks to wait a minute before retrying",
        _ => "undocumented error code: see the vendor's error code list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use ErrorClass::*;
        let table = [
            (60007, RateLimited),
            (60011, RateLimited),
            (60018, RateLimited),
            (60019, RateLimited),
            (10006, RateLimited),
            (10002, Retry),
            (60008, Retry),
            (70001, RegenerateSig),
            (70003, RegenerateSig),
            (70050, SigAndRateLimit),
            (10001, Fatal),
            (10007, Fatal),
            (10059, Fatal),
            (60006, Fatal),
            (60010, Fatal),
            (60016, Fatal),
            (60020, Fatal),
            (60021, Fatal),
            (70009, Fatal),
            (70013, Fatal),
            (70014, Fatal),
            (70016, Fatal),
            (70020, Fatal),
            (10010, GroupGone),
            (10015, GroupGone),
            (10003, Rejected),
            (10004, Rejected),
            (10008, Rejected),
            (10011, Rejected),
            (10019, Rejected),
            (12345, Rejected),
            (-1, Rejected),
        ];
        for (code, want) in table {
            assert_eq!(classify(code), want, "code {code}");
        }
    }

    #[test]
    fn only_codes_without_another_meaning_may_mean_offline() {
        for code in [10004, 10019, 12345, 20001] {
            assert_eq!(offline_conflict(code), None, "{code}");
        }
        for code in [
            10001, 10002, 10003, 10006, 10007, 10008, 10010, 10011, 10015, 10059, 60006, 60007,
            60008, 60010, 60011, 60016, 60018, 60019, 60020, 60021, 70001, 70003, 70009, 70013,
            70014, 70016, 70020, 70050,
        ] {
            assert_eq!(offline_conflict(code), Some(describe(code)), "{code}");
        }
    }

    #[test]
    fn every_classified_code_has_a_description() {
        for code in [
            10001, 10002, 10003, 10004, 10006, 10007, 10008, 10010, 10011, 10015, 10019, 10059,
            60006, 60007, 60008, 60010, 60011, 60016, 60018, 60019, 60020, 60021, 70001, 70003,
            70009, 70013, 70014, 70016, 70020, 70050,
        ] {
            assert!(
                !describe(code).starts_with("undocumented"),
                "code {code} lacks a description"
            );
        }
        assert!(describe(99999).starts_with("undocumented"));
    }
}
