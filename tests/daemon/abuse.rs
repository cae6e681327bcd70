//! Abuse of the callback endpoint (issue 17): replays, forged log lines, floods, what `/readyz`
//! shows anyone, and an empty token credential.

use super::*;

/// A daemon with signed callbacks on, managing `want`, after its first reconcile went quiet.
fn with_signed_callbacks(want: &Marks) -> (Env, Daemon) {
    let mut env = Env::new();
    env.write("callback.token", "s3cret-token\n");
    env.set(
        "http",
        "{ listen: 127.0.0.1:0, callback_token_file: callback.token }",
    );
    env.desire("cb.yaml", want);
    let d = env.start();
    env.wait_live(want);
    env.settled(&d);
    (env, d)
}

/// POSTs `body` to the daemon's `/callback?QUERY` over a connection of its own; the status.
fn post_callback(d: &Daemon, query: &str, body: &str) -> u16 {
    use std::io::Read;
    let addr = d.addr().expect("the daemon's listener");
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /callback?{query} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The issue's measurement: one captured signed callback sent 1,000 times (the body varied
/// each time, since `Sign` does not cover it) led to 815 `modify_user_info` calls. Now the
/// first is accepted, the others are refused as replays, and at most one re-send follows.
#[test]
fn one_captured_callback_replayed_1000_times_causes_at_most_one_resend() {
    let want = marks(&[("@TGS#RP", "alice", &[1000, 1001])]);
    let (env, d) = with_signed_callbacks(&want);
    let time = unix_now().to_string();
    let sign = marksync::tim::callback::sign("s3cret-token", &time);
    let query = format!(
        "SdkAppid={APP}&CallbackCommand=Group.CallbackOnMemberStateChange&contenttype=json\
         &ClientIP=10.0.0.1&OptPlatform=Web&Sign={sign}&RequestTime={time}"
    );
    let body = |i: usize| {
        let json = serde_json::json!({
            "CallbackCommand": "Group.CallbackOnMemberStateChange",
            "GroupId": "@TGS#RP", "Type": "AVChatRoom", "EventType": "Online",
            "EventCause": if i.is_multiple_of(2) { "HeartbeatRecover" } else { "Join" },
            "MemberList": [{"Member_Account": "alice"}],
        });
        format!("{}{json}", " ".repeat(i % 7))
    };
    let calls_before = env.calls();
    let serial_before = env.state()["serial"].as_u64().unwrap();
    let started = Instant::now();
    let mut replies: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..1000 {
        *replies
            .entry(post_callback(&d, &query, &body(i)))
            .or_default() += 1;
    }
    let elapsed = started.elapsed();
    env.settled(&d);
    let resends = env.calls() - calls_before;
    let writes = env.state()["serial"].as_u64().unwrap() - serial_before;
    let refused = metric(
        &d.metrics(),
        r#"marksync_callback_refusals_total{reason="replayed"}"#,
    )
    .unwrap_or(0.0);
    eprintln!(
        "1000 replays of one signed callback in {elapsed:.1?}: replies {replies:?}, \
         {resends} modify_user_info calls, {writes} state writes, {refused} counted as replayed"
    );
    assert_eq!(replies.get(&200), Some(&1), "{replies:?}");
    assert_eq!(replies.get(&409), Some(&999), "{replies:?}");
    assert!(resends <= 1, "{resends} re-sends");
    assert_eq!(refused, 999.0);
    env.wait_live(&want);
}

/// The issue's forged line: a newline and an escape sequence in `CallbackCommand` put an
/// `INFO ... all marks cleared` line into the text log; and every refusal wrote a line (36,719
/// in one run). Now the value is escaped, and 1,000 refusals write a bounded number of lines.
#[test]
fn refused_callbacks_cannot_forge_log_lines_or_flood_the_log() {
    let want = marks(&[("@TGS#LG", "alice", &[1000])]);
    let (_env, d) = with_signed_callbacks(&want);
    let forged = "2026-12-03T19:00:00.000000Z  INFO marksync: all marks cleared";
    let command = format!(
        "x%0A{}%1B%5B2K",
        forged.replace(' ', "%20").replace(':', "%3A")
    );
    let query = format!("SdkAppid={APP}&CallbackCommand={command}&contenttype=json");
    let started = Instant::now();
    assert_eq!(post_callback(&d, &query, "{}"), 401);
    for _ in 0..1000 {
        assert_eq!(post_callback(&d, &query, "{}"), 401);
    }
    let elapsed = started.elapsed();
    let refused = metric(
        &d.metrics(),
        r#"marksync_callback_refusals_total{reason="rejected_sign"}"#,
    )
    .unwrap_or(0.0);
    let log = d.wait_stderr("callback refused");
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("callback refused"))
        .count();
    eprintln!(
        "1001 refused callbacks in {elapsed:.1?}: {refusal_lines} log lines, {refused} counted"
    );
    let forged_lines = log.lines().filter(|l| l.starts_with(forged)).count();
    eprintln!("{forged_lines} forged lines");
    assert_eq!(forged_lines, 0, "forged lines in the log");
    assert!(!log.contains('\u{1b}'), "a raw ESC in the log");
    assert!(
        log.contains("x\\n2026-12-03T19:00:00.000000Z  INFO marksync: all marks cleared\\u{1b}[2K"),
        "the command is logged escaped:\n{log}"
    );
    // One line per 10 s interval at most, the first at once.
    let bound = 1 + elapsed.as_secs() as usize / 10 + 1;
    assert!(
        refusal_lines <= bound,
        "{refusal_lines} refusal lines in {elapsed:?}"
    );
    assert_eq!(refused, 1001.0);
}

/// `/readyz` answers anyone who reaches the port: it says which file, which line and how many
/// problems, never the source text (account names); the log keeps the full diagnostic.
#[test]
fn readyz_names_the_broken_file_and_line_but_not_its_text() {
    let (env, d, _a, _b) = running();
    env.write(
        "marks/a.yaml",
        "groups:\n  \"@TGS#1A\":\n    members:\n      private_student_name: [1000\n",
    );
    let log = d.wait_stderr("do not parse");
    assert!(log.contains("private_student_name"), "the log has it all");
    let (status, body) = poll("/readyz to answer 503", WAIT, || {
        let (status, body) = d.get("/readyz");
        (status == 503).then_some((status, body))
    });
    assert_eq!(status, 503);
    assert!(
        body.contains("desired files do not parse: 1 error"),
        "{body}"
    );
    assert!(body.contains("a.yaml at line "), "{body}");
    assert!(!body.contains("private_student_name"), "{body}");
    assert!(!body.contains("[1000"), "{body}");
}

/// The shipped units default the `callback-token` credential to empty (`SetCredential=`) so that
/// a host without `/etc/marksync/callback.token` still starts: an empty credential means no token,
/// and a loopback listener then takes unsigned callbacks as before.
#[test]
fn an_empty_callback_token_credential_means_no_token() {
    let mut env = Env::new();
    env.set("http", "{ listen: 127.0.0.1:0 }");
    let want = marks(&[("@TGS#CR", "alice", &[1000])]);
    env.desire("cr.yaml", &want);
    env.write("creds/callback-token", "");
    env.write_config();
    let creds = env.path("creds");
    let mut d = Daemon::spawn(
        &env.path("marksync.yaml"),
        env.path("daemon-creds.log"),
        |c| {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        },
    );
    d.wait_ready();
    env.wait_live(&want);
    let query = format!(
        "SdkAppid={APP}&CallbackCommand=Group.CallbackOnMemberStateChange&contenttype=json\
         &ClientIP=10.0.0.1&OptPlatform=Web"
    );
    let body = serde_json::json!({
        "CallbackCommand": "Group.CallbackOnMemberStateChange",
        "GroupId": "@TGS#CR", "Type": "AVChatRoom", "EventType": "Online",
        "EventCause": "Join", "MemberList": [{"Member_Account": "alice"}],
    });
    assert_eq!(
        post_callback(&d, &query, &body.to_string()),
        200,
        "{}",
        d.proc.stderr()
    );
}
