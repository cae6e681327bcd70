//! What `marksync --version` and `marksync version [--json]` say: the package version, the commit
//! and the build date, all fixed at build time through `option_env!`: the commit from
//! `MARKSYNC_BUILD_COMMIT` ([`crate::metrics::BUILD_COMMIT`]; `build.rs` takes it from git when
//! unset and building from a checkout of this crate), the date
//! from `MARKSYNC_BUILD_DATE` (`YYYY-MM-DD`) or else `SOURCE_DATE_EPOCH` (reproducible builds'
//! Unix seconds); either missing reads `unknown`.

use serde::Serialize;

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the binary says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// The package version (`0.2.0`).
    pub version: &'static str,
    /// The commit, as given at build time, or `unknown`.
    pub commit: &'static str,
    /// The build date `YYYY-MM-DD`, or `unknown`.
    pub build_date: String,
}

/// This binary's build information.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: VERSION,
        commit: crate::metrics::BUILD_COMMIT,
        build_date: build_date(
            option_env!("MARKSYNC_BUILD_DATE"),
            option_env!("SOURCE_DATE_EPOCH"),
        ),
    }
}

/// The build date from the two variables: `MARKSYNC_BUILD_DATE` as given, else
/// `SOURCE_DATE_EPOCH` (Unix seconds) as a UTC date, else `unknown`. Pure.
pub fn build_date(explicit: Option<&str>, source_date_epoch: Option<&str>) -> String {
    if let Some(d) = explicit.map(str::trim).filter(|d| !d.is_empty()) {
        return d.to_string();
    }
    source_date_epoch
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// `0.2.0 (commit abc1234, built 2026-11-28)`: what follows `marksync` in `--version`. A full
/// commit hash is shortened to 7 characters, as git shows it.
pub fn version_line(info: &BuildInfo) -> String {
    let commit = if info.commit.len() > 7 && info.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        &info.commit[..7]
    } else {
        info.commit
    };
    format!(
        "{} (commit {commit}, built {})",
        info.version, info.build_date
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_date_comes_from_either_variable_or_is_unknown() {
        assert_eq!(build_date(Some("2026-11-28"), Some("0")), "2026-11-28");
        assert_eq!(build_date(None, Some("1795824000")), "2026-11-28");
        assert_eq!(build_date(None, Some("not a number")), "unknown");
        assert_eq!(build_date(Some(" "), None), "unknown");
        assert_eq!(build_date(None, None), "unknown");
    }

    #[test]
    fn the_version_line_names_version_commit_and_date() {
        let info = BuildInfo {
            version: "0.2.0",
            commit: "abc1234def5678",
            build_date: "2026-11-28".into(),
        };
        assert_eq!(
            version_line(&info),
            "0.2.0 (commit abc1234, built 2026-11-28)"
        );
        let unknown = BuildInfo {
            commit: "unknown",
            build_date: "unknown".into(),
            ..info
        };
        assert_eq!(
            version_line(&unknown),
            "0.2.0 (commit unknown, built unknown)"
        );
    }
}
