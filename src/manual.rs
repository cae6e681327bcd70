//! The manual pages of `marksync man`, generated from the CLI definition: `marksync(1)` and one
//! page per subcommand (`marksync-plan(1)`, `marksync-state-show(1)`...), each with its own flags
//! and the global ones, and SEE ALSO lines naming only pages that are generated with it. The
//! main page adds what `--help` cannot say: ENVIRONMENT and FILES.
//!
//! Pure: the caller writes the pages (`marksync man --dir DIR`, or the main page on stdout).

use std::io::Write;

/// One manual page.
pub struct Page {
    /// The page's name, e.g. `marksync-state-show` (the file is `NAME.1`).
    pub name: String,
    /// The page in roff.
    pub roff: Vec<u8>,
}

impl Page {
    /// The file name, in section 1.
    pub fn file_name(&self) -> String {
        format!("{}.1", self.name)
    }
}

/// The variables marksync reads, and what each does.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "MARKSYNC_CONFIG",
        "The config file when -c/--config is not given (default: ./marksync.yaml).",
    ),
    (
        "MARKSYNC_SECRET_KEY",
        "The app's secret key, when the config has no secret_key_file. Never printed.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd (LoadCredential=): the secret key is read from its secret-key file \
         when neither secret_key_file nor MARKSYNC_SECRET_KEY is set, and the callback token \
         from callback-token.",
    ),
    (
        "MARKSYNC_LOG",
        "The log filter, in tracing's syntax (e.g. marksync=debug,warn). Wins over RUST_LOG and \
         over -v/-q.",
    ),
    (
        "RUST_LOG",
        "The log filter when MARKSYNC_LOG is unset or empty (container images set this one).",
    ),
    (
        "NO_COLOR",
        "No colour, even on a terminal. Colour is only used on a terminal anyway.",
    ),
    (
        "CLICOLOR_FORCE",
        "Colour even when the output is not a terminal.",
    ),
    (
        "MARKSYNC_ADVERTISE",
        "marksync run --advertise: the address (HOST or HOST:PORT) standby daemons relay \
         callbacks to, when the state is in an object store and http.listen binds all \
         interfaces (a pod's IP, from the downward API).",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, \
         AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, \
         AWS_ENDPOINT_URL_STS",
        "For a state in an object store (state: s3://BUCKET/KEY): the credentials (static keys, \
         or a web identity token exchanged for AWS_ROLE_ARN's), region and endpoint \
         (AWS_ALLOW_HTTP=true for a plain-http endpoint such as a local S3 server; \
         SSL_CERT_FILE for a store or STS behind a private CA). An empty variable counts as \
         unset. Credentials are never printed. (gs:// is refused: Google Cloud Storage is not \
         verified.)",
    ),
    (
        "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_ENDPOINT, \
         AZURE_ALLOW_HTTP, AZURE_STORAGE_USE_EMULATOR",
        "For a state in Azure Blob Storage (state: az://CONTAINER/KEY): the storage account \
         (or state_store.account), its key (or a SAS, a service principal, workload identity, \
         a managed identity: the AZURE_* variables of Azure's SDKs), the account's endpoint, \
         and the emulator switch for Azurite (with AZURITE_BLOB_STORAGE_URL). Credentials are \
         never printed.",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd for Type=notify: marksync run reports readiness and feeds the watchdog.",
    ),
    (
        "COMPLETE",
        "Shell completion: COMPLETE=bash marksync prints a script that asks marksync itself for \
         candidates, including group IDs and accounts from the state (see marksync-completions(1)).",
    ),
];

/// The files marksync reads and writes.
const FILES: &[(&str, &str)] = &[
    (
        "./marksync.yaml",
        "The config (or -c FILE, or $MARKSYNC_CONFIG). Relative paths in it are relative to \
         its directory.",
    ),
    (
        "desired (a directory)",
        "The desired files: *.yaml, *.yml and *.json, in any depth; dot-names are skipped.",
    ),
    (
        "state (default state/marksync.json)",
        "What the service confirmed: the marks marksync manages. Written atomically; never \
         edit it by hand (use marksync state rm).",
    ),
    (
        "STATE.bak",
        "The previous generation of the state, kept at every save.",
    ),
    (
        "STATE.intents",
        "The calls in flight (marks being set or cleared), so that a crash leaves nothing \
         unaccounted for; read with the state, folded into it (and removed) by the next save.",
    ),
    (
        "STATE.lock",
        "The lock of apply, import, state rm and run; it names its holder (host, pid, command).",
    ),
    (
        "secret_key_file",
        "The app's secret key, one line; keep it mode 600.",
    ),
    (
        "PLAN (plan --out FILE)",
        "A saved plan for marksync apply FILE: no secret in it.",
    ),
];

/// Every page: the main one first, then one per subcommand, depth first. `cmd` is the CLI
/// definition with its version set; `examples` (the main `--help`'s closing text) becomes the
/// main page's EXAMPLES AND EXIT STATUS section.
pub fn pages(cmd: clap::Command) -> std::io::Result<Vec<Page>> {
    // No `help` subcommand page: `--help` is listed on every page.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    collect(&cmd, None, &page_name(&cmd), &mut out)?;
    Ok(out)
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn collect(
    cmd: &clap::Command,
    parent: Option<&clap::Command>,
    main: &str,
    out: &mut Vec<Page>,
) -> std::io::Result<()> {
    out.push(render(cmd, parent, main)?);
    for sub in visible(cmd) {
        collect(sub, Some(cmd), main, out)?;
    }
    Ok(())
}

fn render(
    cmd: &clap::Command,
    parent: Option<&clap::Command>,
    main: &str,
) -> std::io::Result<Page> {
    let name = page_name(cmd);
    // The footer names the program, not the subcommand (`show 0.2.0`).
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("{main} {}", cmd.get_version().unwrap_or_default()));
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut roff)?;
    }
    if visible(cmd).next().is_some() {
        man.render_subcommands_section(&mut roff)?;
    }
    let root = parent.is_none();
    if root {
        if let Some(text) = cmd.get_after_help() {
            section(&mut roff, "EXAMPLES AND EXIT STATUS")?;
            writeln!(roff, ".nf")?;
            for line in text.to_string().lines() {
                writeln!(roff, "{}", escape(line))?;
            }
            writeln!(roff, ".fi")?;
        }
        definitions(&mut roff, "ENVIRONMENT", ENVIRONMENT)?;
        definitions(&mut roff, "FILES", FILES)?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut roff)?;
    }
    // The main page (ENVIRONMENT, FILES, exit status), the parent, the subcommands.
    let mut see_also: Vec<String> = Vec::new();
    if let Some(p) = parent {
        if page_name(p) != main {
            see_also.push(main.to_owned());
        }
        see_also.push(page_name(p));
    }
    see_also.extend(visible(cmd).map(page_name));
    if !see_also.is_empty() {
        section(&mut roff, "SEE ALSO")?;
        let refs: Vec<String> = see_also
            .iter()
            .map(|n| format!("\\fB{}\\fR(1)", escape(n)))
            .collect();
        writeln!(roff, "{}", refs.join(", "))?;
    }
    Ok(Page {
        name,
        roff: once_preamble(&roff),
    })
}

/// `roff` with clap_mangen's quote-string preamble (which it writes before every section it
/// renders) kept only before the first.
fn once_preamble(roff: &[u8]) -> Vec<u8> {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = String::from_utf8_lossy(roff);
    match text.find(PREAMBLE) {
        Some(first) => {
            let after = first + PREAMBLE.len();
            format!("{}{}", &text[..after], text[after..].replace(PREAMBLE, "")).into_bytes()
        }
        None => roff.to_vec(),
    }
}

fn section(roff: &mut Vec<u8>, title: &str) -> std::io::Result<()> {
    writeln!(roff, ".SH \"{title}\"")
}

/// A section of `.TP` definitions.
fn definitions(roff: &mut Vec<u8>, title: &str, entries: &[(&str, &str)]) -> std::io::Result<()> {
    section(roff, title)?;
    for (term, text) in entries {
        writeln!(roff, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(text))?;
    }
    Ok(())
}

/// `text` as roff text: backslashes and hyphens escaped, and a line never read as a request.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .version("1.0")
            .about("A tool")
            .after_help("Exit codes:\n  0  fine")
            .arg(clap::Arg::new("config").long("config").global(true))
            .subcommand(
                clap::Command::new("state").about("State").subcommand(
                    clap::Command::new("show").about("Show").arg(
                        clap::Arg::new("json")
                            .long("json")
                            .action(clap::ArgAction::SetTrue),
                    ),
                ),
            )
            .subcommand(clap::Command::new("plan").about("Plan"))
    }

    fn text(p: &Page) -> String {
        String::from_utf8(p.roff.clone())
            .unwrap()
            .replace("\\-", "-")
    }

    #[test]
    fn one_page_per_command_each_naming_its_own_flags_and_the_global_ones() {
        let pages = pages(cli()).unwrap();
        let names: Vec<_> = pages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["tool", "tool-state", "tool-state-show", "tool-plan"]
        );
        let show = text(&pages[2]);
        assert!(show.contains("--json"), "{show}");
        assert!(show.contains("--config"), "the global flag: {show}");
        assert!(show.contains("\\fBtool\\fR(1)") && show.contains("\\fBtool-state\\fR(1)"));
        let main = text(&pages[0]);
        for section in [
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES AND EXIT STATUS",
            "SEE ALSO",
        ] {
            assert!(
                main.contains(&format!(".SH \"{section}\"")),
                "{section}: {main}"
            );
        }
        assert!(!main.contains("tool-help"), "no page for `help`: {main}");
    }

    #[test]
    fn text_is_never_read_as_a_request() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b --x"), "a\\eb \\-\\-x");
    }
}
