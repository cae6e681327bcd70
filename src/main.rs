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
  marksync plan --out plan.json          review the changes and save them for apply
  marksync apply plan.json               apply exactly the reviewed plan (refused if stale)
  marksync apply                         plan and apply (asks for 'yes' on a terminal)
  marksync state show '@TGS#a6I4ZUUGO'   what the state records for a group
  marksync run                           the daemon

Exit codes:
  0    success, or no changes
  1    error: config, desired files, state, credentials, fatal API error, usage,
       a refused saved plan, an apply not approved
  2    plan --detailed-exitcode found changes
  3    refused by the mass-clear guard; nothing was sent
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
    },
    /// Print what `apply` would do.
    Plan {
        /// Print the plan as one JSON object.
        #[arg(long)]
        json: bool,
        /// Exit 2 when there are changes, 0 when there are none.
        #[arg(long)]
        detailed_exitcode: bool,
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
    },
    /// Read the live marks and record, without a single write call, those the desired files
    /// declare (builds or repairs the state).
    Import {
        /// Show what would be recorded; never write the state.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon: reconcile at start, then on file changes, timers, callbacks and SIGHUP.
    Run {
        /// Plan and log; never call the API or write state.
        #[arg(long)]
        dry_run: bool,
        /// Let plans through the mass-clear guard.
        #[arg(long)]
        allow_mass_clear: bool,
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
    /// Print a shell completion script, generated from this CLI.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from this CLI.
    Man,
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
    Cli::command().version(VERSION.as_str())
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

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let cli = match cli_command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.log_format, cli.verbose, cli.quiet);
    let config = cmd::config_path(cli.config);
    let result = match cli.command {
        Command::Validate { strict } => cmd::validate(&config, strict),
        Command::Plan {
            json,
            detailed_exitcode,
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
            },
        ),
        Command::Import { dry_run } => cmd::import(
            &config,
            &cmd::ImportOptions {
                dry_run,
                verbose: cli.verbose > 0,
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
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cli_command())
                .render(&mut buf)
                .map_err(|e| marksync::error::Error::io("cannot render the manual page", e))
                .and_then(|()| print(&buf))
        }
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
        }) => cmd::state_rm(&config, &group, account.as_ref(), mark),
        Command::Run {
            dry_run,
            allow_mass_clear,
        } => marksync::daemon::main(
            &config,
            marksync::daemon::RunOptions {
                dry_run,
                allow_mass_clear,
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

fn init_tracing(format: LogFormat, verbose: u8, quiet: u8) {
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
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours on a terminal only: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The log filter: `MARKSYNC_LOG`, else the conventional `RUST_LOG` (container images and
/// manifests set that one), else marksync at `level` and everything else at `warn`.
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
