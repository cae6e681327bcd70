//! Dynamic shell completion (`COMPLETE=bash marksync`, clap_complete's `CompleteEnv`): the
//! values only marksync knows, read from the state. `state show <TAB>` offers the groups the
//! state records, `state show GROUP <TAB>` that group's accounts, and `state rm GROUP ACCOUNT
//! <TAB>` that member's marks.
//!
//! The shell runs `marksync -- marksync state show GROUP ''` on every TAB; [`Context::from_words`]
//! reads the config path and the group or account already typed from those words, and the
//! candidate functions read the state. Completion never fails loudly: a missing config or state
//! offers nothing (the shell then falls back to file names), and nothing is printed but the
//! candidates.

use std::ffi::OsString;
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;

use crate::model::{Account, GroupId};
use crate::state::{self, State};

/// What the words typed so far say about the values to offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The config: `-c FILE`/`--config FILE`/`--config=FILE` among the words, else
    /// `$MARKSYNC_CONFIG`, else `marksync.yaml` (as the command itself would resolve it).
    pub config: PathBuf,
    /// The positional values after `state show|rm|list` typed before the word being completed.
    pub positionals: Vec<String>,
}

impl Context {
    /// The context of `words` (the command line, program name first) when the word at
    /// `completing` is being completed; `config_env` is `$MARKSYNC_CONFIG`.
    pub fn from_words(words: &[OsString], completing: usize, config_env: Option<String>) -> Self {
        let words: Vec<String> = words
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let mut config = None;
        let mut positionals = Vec::new();
        let mut after_state_command = false;
        // Only the words before the one being completed count.
        let end = completing.min(words.len());
        let mut i = 1;
        while i < end {
            let w = &words[i];
            let value_next = i + 1 < end;
            if w == "-c" || w == "--config" {
                if value_next {
                    config = Some(PathBuf::from(&words[i + 1]));
                }
                i += 2;
                continue;
            }
            if let Some(v) = w.strip_prefix("--config=") {
                config = Some(PathBuf::from(v));
            } else if let Some(v) = w.strip_prefix("-c").filter(|v| !v.is_empty()) {
                config = Some(PathBuf::from(v));
            } else if w.starts_with('-') {
                // A flag (`--json`, `--log-format` takes its
                // value as `--log-format=json` or the next word, which is never a group).
            } else if after_state_command {
                positionals.push(w.clone());
            } else if w == "show" || w == "rm" || w == "list" {
                after_state_command = words[..i].iter().any(|p| p == "state");
            }
            i += 1;
        }
        Context {
            config: crate::config::resolve_path(config, config_env),
            positionals,
        }
    }

    /// The state the config names, if both load.
    fn state(&self) -> Option<State> {
        let config = crate::config::load(&self.config).ok()?;
        // A state in an object store offers nothing: a network read on every TAB is too slow.
        match &config.state {
            state::Location::File(path) => state::load(path, config.sdkappid).ok(),
            state::Location::Object(_) => None,
        }
    }
}

/// The groups the state records that start with `current`, each with its member count.
pub fn groups(context: &Context, current: &str) -> Vec<CompletionCandidate> {
    let Some(st) = context.state() else {
        return Vec::new();
    };
    state::inspect::list(&st, None)
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.group.as_str().starts_with(current))
        .map(|g| {
            CompletionCandidate::new(g.group.as_str()).help(Some(
                format!(
                    "{} {}",
                    g.members,
                    crate::render::plural(g.members, "member", "members")
                )
                .into(),
            ))
        })
        .collect()
}

/// The accounts the state records in the group typed before (the first positional) that start
/// with `current`, each with its marks.
pub fn accounts(context: &Context, current: &str) -> Vec<CompletionCandidate> {
    let Some(group) = context.group() else {
        return Vec::new();
    };
    members(context, &group, None)
        .into_iter()
        .filter(|(account, _)| account.as_str().starts_with(current))
        .map(|(account, marks)| {
            CompletionCandidate::new(account.as_str()).help(Some(marks.join(", ").into()))
        })
        .collect()
}

/// The marks the state records for the member typed before (`state rm GROUP ACCOUNT <TAB>`).
pub fn marks(context: &Context, current: &str) -> Vec<CompletionCandidate> {
    let (Some(group), Some(account)) = (context.group(), context.account()) else {
        return Vec::new();
    };
    members(context, &group, Some(&account))
        .into_iter()
        .flat_map(|(_, marks)| marks)
        .filter(|m| m.starts_with(current))
        .map(CompletionCandidate::new)
        .collect()
}

impl Context {
    fn group(&self) -> Option<GroupId> {
        GroupId::new(self.positionals.first()?).ok()
    }

    fn account(&self) -> Option<Account> {
        Account::new(self.positionals.get(1)?).ok()
    }
}

/// The members of `group` (or only `account`) with their marks, as text.
fn members(
    context: &Context,
    group: &GroupId,
    account: Option<&Account>,
) -> Vec<(Account, Vec<String>)> {
    let Some(st) = context.state() else {
        return Vec::new();
    };
    // The time only sets the ages, which completion does not show.
    state::inspect::show(&st, group, account, 0)
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let marks = m.marks.iter().map(|k| k.mark.to_string()).collect();
            (m.account, marks)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_config_and_the_values_typed_before_the_word_being_completed() {
        let c = Context::from_words(&words("marksync state show @TGS#a "), 4, None);
        assert_eq!(c.config, PathBuf::from("marksync.yaml"));
        assert_eq!(c.positionals, ["@TGS#a"]);
        let c = Context::from_words(
            &words("marksync -c /etc/m.yaml state rm --json @TGS#a bob 10"),
            7,
            Some("env.yaml".into()),
        );
        assert_eq!(c.config, PathBuf::from("/etc/m.yaml"));
        assert_eq!(
            c.positionals,
            ["@TGS#a"],
            "the word being completed is left out"
        );
        let c = Context::from_words(&words("marksync state show --config=x.yaml @T"), 4, None);
        assert_eq!(c.config, PathBuf::from("x.yaml"));
        assert!(c.positionals.is_empty());
        let c = Context::from_words(&words("marksync state show"), 3, Some("env.yaml".into()));
        assert_eq!(c.config, PathBuf::from("env.yaml"));
        // `-c` right before the word being completed: that word is the config, not a value.
        let c = Context::from_words(&words("marksync -c "), 2, None);
        assert_eq!(c.config, PathBuf::from("marksync.yaml"));
    }

    #[test]
    fn nothing_is_offered_without_a_config() {
        let c = Context {
            config: PathBuf::from("/nonexistent/marksync.yaml"),
            positionals: vec!["@TGS#a".into()],
        };
        assert!(groups(&c, "").is_empty());
        assert!(accounts(&c, "").is_empty());
    }
}
