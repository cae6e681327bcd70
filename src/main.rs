//! The `marksync` binary: parse arguments, set up logging, call into the library, map errors to
//! exit codes. Nothing else lives here.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use marksync::cmd;
use marksync::model::{Account, GroupId, Mark};

/// Shown after `--help`: what a day with marksync looks like, and what each exit code means.
const AFTER_HELP: &str = "\
Examples:
  marksync validate                      check the config and every desired file
  marksync plan --out plan.bin           review the changes and save them for apply
  marksync apply plan.bin                apply exactly the reviewed plan (refused if stale)
  marksync apply                         plan and apply (asks for 'yes' on a terminal)
  marksync state show '@TGS#a6I4ZUUGO'   what the state records for a group
  marksync run                           the daemon

Exit codes:
  0    success, or no changes
  1    error: config, desired files, state, credentials, fatal API error, usage,
       a refused saved plan, an apply not approved
  2    plan --detailed-exitcode found changes
  3    refused by the mass-clear guard; nothing was sent (plan --detailed-exitcode:
       apply would refuse)
  4    apply partially failed; what succeeded is recorded
  5    the state is locked by another marksync process
  130  apply interrupted by SIGINT (143: by SIGTERM); what was confirmed is saved";

/// Keeps Tencent Cloud Chat audio-video group member marks equal to what YAML files say.
#[derive(Parser)]
#[command(about, propagate_version = true, after_help = AFTER_HELP)]
struct Cli {
    /// Config file [default: ./marksync.yaml, or $MARKSYNC_CONFIG]
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Global options")]
    log_format: LogFormat,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    verbose: u8,
    /// Less log output (warnings and errors only, or errors only when repeated).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose", help_heading = "Global options")]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load the config and every desired file; print every problem, not just the first.
    Validate {
        /// Treat warnings (such as accounts with unusual characters) as errors: exit 1.
        #[arg(long)]
        strict: bool,
        /// Print every problem (file, line, column, severity, message, code) as one JSON
        /// document on stdout, for editors and CI annotations; the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Print what `apply` would do.
    Plan {
        /// Print the plan as one JSON object.
        #[arg(long)]
        json: bool,
        /// Print the plan as Markdown for a pull or merge request comment (with the hidden
        /// marker line `<!-- marksync-plan -->` for one sticky comment).
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
        /// Exit 2 when there are changes, 3 when the mass-clear guard would refuse them, 0 when
        /// there are none.
        #[arg(long)]
        detailed_exitcode: bool,
        /// The reviewed override of the mass-clear guard: the verdict reads `overridden`, the
        /// exit code is 2, and a plan saved with `--out` records it so `apply FILE` sends it.
        #[arg(long)]
        allow_mass_clear: bool,
        /// Plan re-sending every desired mark, confirmed or not.
        #[arg(long)]
        reassert: bool,
        /// Read the live marks first and plan from what the service holds (drift).
        #[arg(long)]
        refresh: bool,
        /// Also save the plan to FILE, for `marksync apply FILE` (no secret in it).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Plan (or read a saved plan), print it, execute it, record the results.
    Apply {
        /// A plan saved by `plan --out`: apply exactly it. Refused (nothing sent) when the app,
        /// the state, the desired files changed since, when it is older than
        /// `saved_plan_max_age`, when it was already applied, or when planning again (at its
        /// creation time) does not give exactly it.
        #[arg(value_name = "FILE")]
        plan_file: Option<PathBuf>,
        /// Do not ask for `yes` on a terminal (without a terminal apply never asks).
        #[arg(long)]
        auto_approve: bool,
        /// Print the plan object, one JSON line per call and a summary line.
        #[arg(long)]
        json: bool,
        /// Plan and print; never call the API or write state.
        #[arg(long)]
        dry_run: bool,
        /// Apply even a plan that clears more than the guard allows.
        #[arg(long)]
        allow_mass_clear: bool,
        /// Re-send every desired mark, confirmed or not (the service drops the marks of members
        /// who go offline; this puts them back).
        #[arg(long, conflicts_with = "plan_file")]
        reassert: bool,
        /// Read the live marks first and plan from what the service holds (drift).
        #[arg(long, conflicts_with = "plan_file")]
        refresh: bool,
        /// Wait this long for another holder of the state's lock (default: fail at once, naming
        /// it, exit 5).
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
    },
    /// Read the live marks and record, without a single write call, those the desired files
    /// declare (builds or repairs the state).
    Import {
        /// Show what would be recorded; never write the state.
        #[arg(long)]
        dry_run: bool,
        /// Wait this long for another holder of the state's lock (default: fail at once, naming
        /// it, exit 5).
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
    },
    /// The daemon: reconcile at start, then on file changes, timers, callbacks and SIGHUP.
    Run {
        /// Plan and log; never call the API or write state.
        #[arg(long)]
        dry_run: bool,
        /// Let plans through the mass-clear guard.
        #[arg(long)]
        allow_mass_clear: bool,
        /// Wait this long for another holder of the state's lock (default: fail at once, naming
        /// it, exit 5).
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
        /// With the state in an object store: the address standby daemons relay callbacks to,
        /// recorded in the lock (an IP or DNS name as peers reach this daemon; without a port,
        /// the listener's). Needed when `http.listen` binds all interfaces, as in a pod.
        #[arg(long, env = "MARKSYNC_ADVERTISE", value_name = "HOST[:PORT]")]
        advertise: Option<marksync::http::advertise::Advertise>,
    },
    /// Run the local API emulator on a loopback address.
    Emulator {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Create unknown @TGS# groups on first use and treat unknown accounts as online members.
        #[arg(long)]
        demo: bool,
    },
    /// Print a UserSig for the configured admin (for debugging with curl).
    Usersig,
    /// Inspect the state file, or forget part of it (without clearing anything on the service).
    #[command(subcommand)]
    State(StateCommand),
    /// Print the version, commit and build date.
    Version {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the desired-file format (for editors: yaml-language-server).
    Schema,
    /// Print a static shell completion script (subcommands and flags), generated from this CLI.
    ///
    /// For completion that also offers the group IDs, accounts and marks the state records
    /// (`state show <TAB>`), source the dynamic script instead: `source <(COMPLETE=bash
    /// marksync)` (or zsh, fish, elvish, powershell); it asks marksync on each TAB.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from this CLI; with --dir, write every page.
    Man {
        /// Write marksync.1 and one page per subcommand (marksync-plan.1, ...) into DIR
        /// (created if missing), e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// The groups the state records, with their members and marks (confirmed, unknown).
    List {
        /// Only this group.
        #[arg(value_parser = group_id)]
        group: Option<GroupId>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A group's members and marks, with how long ago the service confirmed each (marks an
    /// apply sent without seeing the answer are shown as unknown).
    Show {
        /// The group.
        #[arg(value_parser = group_id)]
        group: GroupId,
        /// Only this member.
        #[arg(value_parser = account)]
        account: Option<Account>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the state as a state file (`state pull > f.json`, then `state: f.json`), or a kept
    /// generation of it.
    Pull {
        /// A kept generation's serial (`marksync state history`).
        #[arg(long, value_name = "N")]
        serial: Option<u64>,
    },
    /// Replace the state with a state file (how a state moves between a file and a store).
    /// Takes the lock; refuses unsettled intents and a serial not higher than the current one.
    Push {
        /// The state file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace the state even when the file's serial is not higher.
        #[arg(long)]
        force: bool,
        /// Wait this long for another holder of the lock (default: fail at once, naming it).
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
    },
    /// The kept generations of the state, newest first.
    History {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove a stale lock by its id (the lock error names it).
    Unlock {
        /// The lock's id.
        #[arg(value_name = "LOCK_ID")]
        lock_id: String,
    },
    /// Forget a group, a member or one mark: marksync stops managing it; nothing is cleared on
    /// the service. Takes the lock; the previous state is kept as `.bak`.
    Rm {
        /// The group.
        #[arg(value_parser = group_id)]
        group: GroupId,
        /// Only this member.
        #[arg(value_parser = account)]
        account: Option<Account>,
        /// Only this mark of the member.
        #[arg(value_parser = mark, requires = "account")]
        mark: Option<Mark>,
        /// Wait this long for another holder of the state's lock (default: fail at once, naming
        /// it, exit 5).
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
    },
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|_| format!("`{s}` is not a duration: write it with a unit, like 30s or 2m"))
}

fn group_id(s: &str) -> Result<GroupId, String> {
    GroupId::new(s)
}

fn account(s: &str) -> Result<Account, String> {
    Account::new(s)
}

fn mark(s: &str) -> Result<Mark, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a mark number"))?;
    Mark::new(n)
}

/// The CLI definition with the build's version line (`--version`), computed at run time.
fn cli_command() -> clap::Command {
    use clap::CommandFactory;
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        marksync::version::version_line(&marksync::version::build_info())
    });
    Cli::command()
        .version(VERSION.as_str())
        .mut_subcommand("emulator", |c| {
            c.after_help(marksync::emulator::control_help())
        })
}

/// Writes `text` to stdout; a closed pipe (`marksync man | head`) is not an error worth a trace.
fn print(text: &[u8]) -> Result<u8, marksync::error::Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .map_err(|e| marksync::error::Error::io("cannot write output", e))?;
    Ok(marksync::error::exit::OK)
}

/// `marksync man`: the main page on stdout, or every page written into `dir`.
fn man(dir: Option<&std::path::Path>) -> Result<u8, marksync::error::Error> {
    use marksync::error::Error;
    let pages = marksync::manual::pages(cli_command())
        .map_err(|e| Error::io("cannot render the manual pages", e))?;
    let Some(dir) = dir else {
        return print(&pages[0].roff);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    for page in &pages {
        let path = dir.join(page.file_name());
        std::fs::write(&path, &page.roff)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    print(
        format!(
            "Wrote {} manual pages to {} (marksync.1 and one per subcommand).\n",
            pages.len(),
            dir.display()
        )
        .as_bytes(),
    )
}

/// The CLI with the completers of values only the state knows (group IDs, accounts, marks),
/// for dynamic completion: the shell runs `COMPLETE=SHELL marksync -- WORDS...` on each TAB.
fn completing_cli() -> clap::Command {
    use clap_complete::engine::ArgValueCompleter;
    use marksync::completion::{self, Context};
    let words: Vec<std::ffi::OsString> = std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect();
    // bash and zsh say which word is completed; the other shells complete the last.
    let completing = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse().ok())
        .unwrap_or(words.len().saturating_sub(1));
    let context = Context::from_words(&words, completing, std::env::var("MARKSYNC_CONFIG").ok());
    let completer = |f: fn(&Context, &str) -> Vec<clap_complete::engine::CompletionCandidate>| {
        let context = context.clone();
        ArgValueCompleter::new(move |current: &std::ffi::OsStr| {
            f(&context, &current.to_string_lossy())
        })
    };
    let (groups, accounts, marks) = (
        completer(completion::groups),
        completer(completion::accounts),
        completer(completion::marks),
    );
    cli_command().mut_subcommand("state", |state| {
        state
            .mut_subcommand("list", |c| c.mut_arg("group", |a| a.add(groups.clone())))
            .mut_subcommand("show", |c| {
                c.mut_arg("group", |a| a.add(groups.clone()))
                    .mut_arg("account", |a| a.add(accounts.clone()))
            })
            .mut_subcommand("rm", |c| {
                c.mut_arg("group", |a| a.add(groups.clone()))
                    .mut_arg("account", |a| a.add(accounts.clone()))
                    .mut_arg("mark", |a| a.add(marks.clone()))
            })
    })
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    // `COMPLETE=bash marksync` prints the registration script; with words after `--`, the
    // candidates. Without `COMPLETE` this returns at once.
    clap_complete::CompleteEnv::with_factory(completing_cli).complete();
    let cli = match cli_command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // Progress is drawn for one-shot commands on a terminal; the daemon and the emulator log.
    let one_shot = !matches!(cli.command, Command::Run { .. } | Command::Emulator { .. });
    init_tracing(cli.log_format, cli.verbose, cli.quiet, one_shot);
    let config = cmd::config_path(cli.config);
    let result = match cli.command {
        Command::Validate { strict, json } => cmd::validate(&config, strict, json),
        Command::Plan {
            json,
            markdown,
            detailed_exitcode,
            allow_mass_clear,
            reassert,
            refresh,
            out,
        } => cmd::plan(
            &config,
            &cmd::PlanOptions {
                json,
                detailed_exitcode,
                reassert,
                refresh,
                verbose: cli.verbose > 0,
                out,
                markdown,
                allow_mass_clear,
            },
        ),
        Command::Apply {
            plan_file,
            auto_approve,
            json,
            dry_run,
            allow_mass_clear,
            reassert,
            refresh,
            lock_timeout,
        } => cmd::apply(
            &config,
            &cmd::ApplyOptions {
                json,
                dry_run,
                allow_mass_clear,
                reassert,
                refresh,
                verbose: cli.verbose > 0,
                saved: plan_file,
                auto_approve,
                lock_timeout,
            },
        ),
        Command::Import {
            dry_run,
            lock_timeout,
        } => cmd::import(
            &config,
            &cmd::ImportOptions {
                dry_run,
                verbose: cli.verbose > 0,
                lock_timeout,
            },
        ),
        Command::Emulator { listen, demo } => cmd::emulator(&config, listen, demo),
        Command::Usersig => cmd::usersig(&config),
        Command::Version { json } => {
            let info = marksync::version::build_info();
            let text = if json {
                serde_json::to_string(&info).expect("serializes")
            } else {
                format!("marksync {}", marksync::version::version_line(&info))
            };
            print(format!("{text}\n").as_bytes())
        }
        Command::Schema => print(marksync::schema::desired_schema_text().as_bytes()),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cli_command(), "marksync", &mut buf);
            print(&buf)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::State(StateCommand::List { group, json }) => {
            cmd::state_list(&config, group.as_ref(), json)
        }
        Command::State(StateCommand::Show {
            group,
            account,
            json,
        }) => cmd::state_show(&config, &group, account.as_ref(), json),
        Command::State(StateCommand::Pull { serial }) => {
            cmd::state_remote::state_pull(&config, serial)
        }
        Command::State(StateCommand::Push {
            file,
            force,
            lock_timeout,
        }) => cmd::state_remote::state_push(&config, &file, force, lock_timeout),
        Command::State(StateCommand::History { json }) => {
            cmd::state_remote::state_history(&config, json)
        }
        Command::State(StateCommand::Unlock { lock_id }) => {
            cmd::state_remote::state_unlock(&config, &lock_id)
        }
        Command::State(StateCommand::Rm {
            group,
            account,
            mark,
            lock_timeout,
        }) => cmd::state_rm(&config, &group, account.as_ref(), mark, lock_timeout),
        Command::Run {
            dry_run,
            allow_mass_clear,
            lock_timeout,
            advertise,
        } => marksync::daemon::main(
            &config,
            marksync::daemon::RunOptions {
                dry_run,
                allow_mass_clear,
                lock_timeout,
                advertise,
            },
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(anstream::stderr(), "{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints clap's message and exits 0 for `--help`/`--version`, else 1: a usage error is an error
/// (exit 1, SPEC section 1). clap's own 2 is `plan --detailed-exitcode`'s "changes found", so a
/// mistyped flag in CI would read as a plan with changes.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(marksync::error::exit::ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

fn init_tracing(format: LogFormat, verbose: u8, quiet: u8, progress: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::prelude::*;
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (_, 1) => "warn",
        (_, q) if q > 1 => "error",
        (1, _) => "debug",
        _ => "trace",
    };
    let directives = log_directives(
        std::env::var("MARKSYNC_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
        level,
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("marksync={level},warn")));
    // The progress layer sees its events whatever the log filter says; it draws only when
    // stderr is a terminal. Log lines are written around its bar.
    let progress =
        marksync::progress::ProgressLayer::new(progress && std::io::stderr().is_terminal());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(progress.log_writer())
        // Colours on a terminal only: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let progress = progress.with_filter(tracing_subscriber::filter::filter_fn(
        marksync::progress::ProgressLayer::wants,
    ));
    let registry = tracing_subscriber::registry().with(progress);
    match format {
        LogFormat::Text => registry.with(fmt.with_filter(filter)).init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(filter)).init(),
    }
}

/// The log filter: `MARKSYNC_LOG` (what the shipped image and manifests set), else the
/// conventional `RUST_LOG`, else marksync at `level` and everything else at `warn`.
fn log_directives(marksync_log: Option<String>, rust_log: Option<String>, level: &str) -> String {
    [marksync_log, rust_log]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("marksync={level},warn"))
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn marksync_log_wins_then_rust_log_then_the_default() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(log_directives(s("debug"), s("trace"), "info"), "debug");
        assert_eq!(
            log_directives(None, s("marksync=debug"), "info"),
            "marksync=debug"
        );
        assert_eq!(log_directives(s(" "), s("trace"), "info"), "trace");
        assert_eq!(log_directives(None, None, "warn"), "marksync=warn,warn");
    }
}
