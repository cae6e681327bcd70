//! Notifications (SPEC section 12) against a webhook receiver on loopback: delivery, once per
//! condition change, retry after a 500, a 200 with an error code counted as a failure, the
//! 10 s bound of `apply`, and the real binary (`apply` and `run`) posting to the receiver.
//! Every wait is bounded; nothing leaves the machine.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use marksync::config::notify::Event;
use marksync::error::exit;
use marksync::metrics::Metrics;
use marksync::notify::{APPLY_FLUSH, Notifier};
use serde_json::json;

mod common;
use common::receiver::{Answer, Receiver};

/// A config whose `notify:` entries post to `hooks` (URL, format, `on:` or "" for every event),
/// each URL in a file of mode 600 in `dir`.
fn config_with(dir: &Path, hooks: &[(&str, &str, &str)]) -> marksync::config::Config {
    let mut text = "sdkappid: 1400000000\nidentifier: admin\ndesired: m\nnotify:\n".to_string();
    for (i, (url, format, on)) in hooks.iter().enumerate() {
        let file = dir.join(format!("hook{i}.url"));
        std::fs::write(&file, format!("{url}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        text.push_str(&format!(
            "  - url_file: {}\n    format: {format}\n",
            file.display()
        ));
        if !on.is_empty() {
            text.push_str(&format!("    on: [{on}]\n"));
        }
    }
    marksync::config::parse(&dir.join("marksync.yaml"), &text).unwrap()
}

fn metric(metrics: &Metrics, prefix: &str) -> f64 {
    common::daemon::metric(&metrics.encode(), prefix).unwrap_or(0.0)
}

#[tokio::test]
async fn conditions_are_sent_once_per_change_to_the_entries_that_want_them() {
    let dir = tempfile::tempdir().unwrap();
    let everything = Receiver::answering(200, "");
    let drift_only = Receiver::answering(200, "ok");
    let config = config_with(
        dir.path(),
        &[
            (&everything.url(), "json", ""),
            (&drift_only.url(), "slack", "drift"),
        ],
    );
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::new(&config, metrics.clone()).unwrap();
    // Three rounds with drift, then two without: one message when it starts, one when it clears.
    for n in [3, 4, 5] {
        notifier.condition(Event::Drift, true, "a refresh found drift", || {
            format!("{n} lost")
        });
    }
    notifier.condition(Event::Drift, false, "no drift", String::new);
    notifier.condition(Event::Drift, false, "no drift", String::new);
    assert!(notifier.flush(Duration::from_secs(20)).await);

    let bodies = everything.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(
        bodies[0],
        json!({"event": "drift", "app": 1400000000u64, "summary": "a refresh found drift", "details": "3 lost"})
    );
    assert_eq!(bodies[1]["event"], "recovered");
    assert!(
        bodies[1]["summary"]
            .as_str()
            .unwrap()
            .contains("drift cleared"),
        "{}",
        bodies[1]
    );
    // The Slack entry takes drift only: no `recovered`.
    let slack = drift_only.bodies();
    assert_eq!(slack.len(), 1, "{slack:#?}");
    assert!(slack[0]["text"].as_str().unwrap().contains("`drift`"));
    assert_eq!(
        metric(
            &metrics,
            "marksync_notify_delivered_total{format=\"json\",event=\"drift\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "marksync_notify_delivered_total{format=\"json\",event=\"recovered\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "marksync_notify_failures_total{format=\"json\",event=\"drift\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_500_is_retried_and_the_message_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(vec![Answer::Reply(500, "busy")], Answer::Reply(200, ""));
    let config = config_with(dir.path(), &[(&hook.url(), "json", "")]);
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::new(&config, metrics.clone()).unwrap();
    notifier.event(Event::Takeover, "this daemon took over", "");
    assert!(notifier.flush(Duration::from_secs(20)).await);
    let bodies = hook.bodies();
    assert_eq!(
        bodies.len(),
        2,
        "one failed attempt, one retry: {bodies:#?}"
    );
    assert_eq!(bodies[0], bodies[1]);
    let delivered = "marksync_notify_delivered_total{format=\"json\",event=\"takeover\"}";
    assert_eq!(metric(&metrics, delivered), 1.0);
}

#[tokio::test]
async fn a_200_with_an_error_code_is_a_failure_not_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::answering(200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#);
    let config = config_with(dir.path(), &[(&hook.url(), "wecom", "apply_failed")]);
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::new(&config, metrics.clone()).unwrap();
    notifier.after_apply(&Ok(exit::PARTIAL)).await;
    let bodies = hook.bodies();
    // Not retried: a wrong key does not fix itself.
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["msgtype"], "markdown");
    let content = bodies[0]["markdown"]["content"].as_str().unwrap();
    assert!(
        content.contains("apply_failed") && content.contains("exit 4"),
        "{content}"
    );
    let failed = "marksync_notify_failures_total{format=\"wecom\",event=\"apply_failed\"}";
    assert_eq!(metric(&metrics, failed), 1.0);
    let delivered = "marksync_notify_delivered_total{format=\"wecom\",event=\"apply_failed\"}";
    assert_eq!(metric(&metrics, delivered), 0.0);
}

#[tokio::test]
async fn apply_notifies_failures_only() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::answering(200, "");
    let config = config_with(dir.path(), &[(&hook.url(), "json", "")]);
    let notifier = Notifier::new(&config, Arc::default()).unwrap();
    // Success, a cancelled approval, a lock held elsewhere: nothing to tell.
    notifier.after_apply(&Ok(exit::OK)).await;
    notifier
        .after_apply(&Err(marksync::error::Error::Cancelled))
        .await;
    assert!(notifier.flush(Duration::from_secs(5)).await);
    assert!(hook.bodies().is_empty(), "{:#?}", hook.bodies());
}

/// A webhook that never answers: `apply` waits 10 s for it, not more (paused time: the clock
/// jumps over the waits, so this takes no real 10 s).
#[tokio::test(start_paused = true)]
async fn apply_waits_at_most_ten_seconds_for_a_webhook_that_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(Vec::new(), Answer::Hang);
    let config = config_with(dir.path(), &[(&hook.url(), "json", "")]);
    let notifier = Notifier::new(&config, Arc::default()).unwrap();
    let start = tokio::time::Instant::now();
    notifier.after_apply(&Ok(exit::PARTIAL)).await;
    let waited = start.elapsed();
    assert!(
        waited >= APPLY_FLUSH && waited < APPLY_FLUSH + Duration::from_secs(1),
        "{waited:?}"
    );
}

/// The real binary: an apply stopped by a fatal API error posts `apply_failed` to the receiver
/// before it exits, with the exit code it would have had anyway; the URL is never printed.
#[test]
fn apply_through_the_binary_posts_apply_failed() {
    let emu = common::StandaloneEmulator::start();
    // 70001: the UserSig expired, a fatal code (every call stops).
    emu.inject(json!({"kind": "error_code", "code": 70001}));
    let hook = Receiver::answering(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::daemon::config(&emu.endpoint());
    config.remove("http");
    config.insert(
        "notify",
        "[{url_file: hook.url, format: dingtalk, on: [apply_failed, guard_refused]}]".into(),
    );
    common::daemon::write_config(dir.path(), &config);
    let hook_file = dir.path().join("hook.url");
    std::fs::write(&hook_file, hook.url()).unwrap();
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.path().join("marks/physics.yaml"),
        "groups:\n  physics:\n    marks:\n      1002: [student01]\n",
    )
    .unwrap();

    let out = common::cli::marksync(dir.path(), &["apply"]);
    assert_eq!(
        out.code,
        i32::from(exit::ERROR),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}\n{}", out.stderr);
    assert_eq!(bodies[0]["msgtype"], "markdown");
    assert_eq!(bodies[0]["markdown"]["title"], "marksync: apply_failed");
    let text = bodies[0]["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains("apply failed (exit 1)") && text.contains("70001"),
        "{text}"
    );
    let printed = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !printed.contains(&hook.url()),
        "the URL was printed:\n{printed}"
    );

    // A URL file others can read stops the apply before anything is sent.
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let calls = emu.calls();
    let out = common::cli::marksync(dir.path(), &["apply"]);
    assert_eq!(out.code, i32::from(exit::ERROR));
    assert!(
        out.stderr.contains("can be read by other users (mode 644)"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.calls(), calls, "nothing may be sent");
    assert!(!out.stderr.contains(&hook.url()));
    // `validate` says so too.
    let out = common::cli::marksync(dir.path(), &["validate"]);
    assert_eq!(out.code, i32::from(exit::ERROR));
    assert!(
        out.stderr.contains("marksync.yaml:") && out.stderr.contains("mode 644"),
        "{}",
        out.stderr
    );
}

/// The daemon: a desired file that breaks is told once, however many rounds it stays broken,
/// and its repair is told once.
#[test]
fn the_daemon_tells_a_broken_desired_file_once_and_its_repair_once() {
    let hook = Receiver::answering(200, "");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::daemon::config("embedded");
    config.insert(
        "notify",
        "[{url_file: hook.url, format: json, on: [desired_invalid, recovered]}]".into(),
    );
    let path = common::daemon::write_config(dir.path(), &config);
    let hook_file = dir.path().join("hook.url");
    std::fs::write(&hook_file, hook.url()).unwrap();
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let desired = dir.path().join("marks/physics.yaml");
    std::fs::write(
        &desired,
        "groups:\n  physics:\n    marks:\n      1002: [student01]\n",
    )
    .unwrap();
    let mut daemon = common::daemon::Daemon::spawn(&path, dir.path().join("daemon.log"), |_| {});
    daemon.wait_ready();
    assert!(hook.bodies().is_empty(), "{:#?}", hook.bodies());

    common::write_atomic(
        &desired,
        "groups:\n  physics:\n    marks:\n      1002: [student01\n",
    );
    let bodies = hook.wait_bodies(1, Duration::from_secs(20));
    assert_eq!(bodies[0]["event"], "desired_invalid", "{bodies:#?}");
    assert!(
        bodies[0]["details"]
            .as_str()
            .unwrap()
            .contains("physics.yaml:"),
        "{}",
        bodies[0]
    );
    // Broken differently: logged again, not notified again.
    common::write_atomic(&desired, "groups: [\n");
    common::poll(
        "the second problem to be logged",
        Duration::from_secs(20),
        || {
            (daemon
                .proc
                .stderr()
                .matches("desired files do not parse")
                .count()
                >= 2)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.bodies().len(), 1, "{:#?}", hook.bodies());

    common::write_atomic(
        &desired,
        "groups:\n  physics:\n    marks:\n      1002: [student01]\n",
    );
    let bodies = hook.wait_bodies(2, Duration::from_secs(20));
    assert_eq!(bodies[1]["event"], "recovered", "{bodies:#?}");
    assert!(
        bodies[1]["summary"]
            .as_str()
            .unwrap()
            .contains("desired_invalid cleared"),
        "{}",
        bodies[1]
    );
}

/// `plan --refresh` (the scheduled drift check where no daemon runs) posts `drift` when the
/// refresh finds drift that needs calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_refresh_posts_drift() {
    use marksync::clock::ManualClock;
    use marksync::cmd::{self, ApplyOptions, PlanOptions};
    use marksync::emulator::{Emulator, EmulatorConfig, GroupType};

    const G: &str = "@TGS#notify";
    let hook = Receiver::answering(200, "");
    let emu = common::within(Emulator::start(EmulatorConfig::new(
        common::APP,
        common::KEY,
        common::ADMIN,
    )))
    .await
    .unwrap();
    emu.create_group(G, GroupType::AVChatRoom).unwrap();
    common::within(emu.set_online(G, &["alice"])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.key"), format!("{}\n", common::KEY)).unwrap();
    let hook_file = dir.path().join("hook.url");
    std::fs::write(&hook_file, hook.url()).unwrap();
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(dir.path().join("marks")).unwrap();
    std::fs::write(
        dir.path().join("marks/g.yaml"),
        format!("groups:\n  \"{G}\":\n    members:\n      alice: [1000]\n"),
    )
    .unwrap();
    let text = format!(
        "sdkappid: {}\nidentifier: {}\nsecret_key_file: secret.key\nendpoint: {}\n\
         desired: marks/\nstate: state/marksync.json\n\
         notify: [{{url_file: hook.url, format: json, on: [drift]}}]\n",
        common::APP,
        common::ADMIN,
        emu.base_url()
    );
    let path = dir.path().join("marksync.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = marksync::config::parse(&path, &text).unwrap();
    // Applied a minute ago, so a refresh can judge it (newer marks are "not checked").
    let clock = ManualClock::new(cmd::wall_clock_now() - 60);
    let opts = ApplyOptions::default();
    let applied = cmd::apply_with(&config, &opts, Arc::new(clock));
    assert_eq!(common::within(applied).await.unwrap(), exit::OK);
    // Offline drops the mark; back online, nobody told marksync.
    common::within(emu.set_offline(G, &["alice"]))
        .await
        .unwrap();
    common::within(emu.set_online(G, &["alice"])).await.unwrap();
    emu.advance_clock(41);

    // `cmd::plan` has a runtime of its own: run it on a thread of its own.
    let code = tokio::task::spawn_blocking(move || {
        let opts = PlanOptions {
            detailed_exitcode: true,
            refresh: true,
            ..PlanOptions::default()
        };
        cmd::plan(&path, &opts)
    });
    assert_eq!(common::within(code).await.unwrap().unwrap(), exit::CHANGES);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["event"], "drift");
    assert!(
        bodies[0]["details"].as_str().unwrap().starts_with("1 lost"),
        "{}",
        bodies[0]
    );
}

/// The daemon: a plan the guard refuses is told once (with the refusal), however many rounds
/// it is refused, and told `recovered` once the desired files no longer clear too much.
#[test]
fn the_daemon_tells_a_guard_refusal_once_and_its_end_once() {
    let hook = Receiver::answering(200, "");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::daemon::config("embedded");
    config.insert(
        "guard",
        "{ max_clear_fraction: 0.25, min_clears: 1 }".into(),
    );
    config.insert(
        "notify",
        "[{url_file: hook.url, format: json, on: [guard_refused, recovered]}]".into(),
    );
    let path = common::daemon::write_config(dir.path(), &config);
    let hook_file = dir.path().join("hook.url");
    std::fs::write(&hook_file, hook.url()).unwrap();
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let desired = dir.path().join("marks/physics.yaml");
    let both = "groups:\n  \"@TGS#2PHYS101\":\n    marks:\n      1002: [student01, student02]\n";
    std::fs::write(&desired, both).unwrap();
    let mut daemon = common::daemon::Daemon::spawn(&path, dir.path().join("daemon.log"), |_| {});
    daemon.wait_ready();
    daemon.wait_reconciles("startup", 1.0);

    // Clearing both marks is 100% of what is managed: refused, told once, with the refusal.
    common::write_atomic(&desired, "groups:\n  \"@TGS#2PHYS101\":\n    members: {}\n");
    let bodies = hook.wait_bodies(1, Duration::from_secs(20));
    assert_eq!(bodies[0]["event"], "guard_refused", "{bodies:#?}");
    assert!(
        bodies[0]["details"].as_str().unwrap().contains("2"),
        "{}",
        bodies[0]
    );
    // Another refused round (a file event with the same refusal): nothing more.
    common::write_atomic(
        &desired,
        "groups:\n  \"@TGS#2PHYS101\":\n    members: {}\n# again\n",
    );
    daemon.wait_reconciles("files", 2.0);
    assert_eq!(hook.bodies().len(), 1, "{:#?}", hook.bodies());

    common::write_atomic(&desired, both);
    let bodies = hook.wait_bodies(2, Duration::from_secs(20));
    assert_eq!(bodies[1]["event"], "recovered", "{bodies:#?}");
    assert!(
        bodies[1]["summary"]
            .as_str()
            .unwrap()
            .contains("guard_refused cleared"),
        "{}",
        bodies[1]
    );
}

/// A full queue drops its oldest message and counts it; what is kept is delivered in order.
#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::answering(200, "");
    let config = config_with(dir.path(), &[(&hook.url(), "json", "")]);
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::new(&config, metrics.clone()).unwrap();
    // The test's runtime has one thread: the delivery task starts only once this one waits, so
    // all 40 are queued first.
    let extra = 8;
    let total = marksync::notify::QUEUE_CAPACITY + extra;
    for i in 0..total {
        notifier.event(Event::Takeover, &format!("message {i}"), "");
    }
    assert!(notifier.flush(Duration::from_secs(20)).await);
    let summaries: Vec<String> = hook
        .bodies()
        .iter()
        .map(|b| b["summary"].as_str().unwrap().to_string())
        .collect();
    let kept: Vec<String> = (extra..total).map(|i| format!("message {i}")).collect();
    assert_eq!(summaries, kept);
    assert_eq!(
        metric(&metrics, "marksync_notify_dropped_total{format=\"json\"}"),
        extra as f64
    );
    // The notifier's Debug output (a log, a panic message) never holds the URL.
    let debug = format!("{notifier:?}");
    assert!(
        !debug.contains(&hook.url()) && debug.contains("***"),
        "{debug}"
    );
}

/// `apply` through the binary: a plan the guard refuses posts `guard_refused` with the refusal,
/// and the exit code stays 3.
#[test]
fn apply_through_the_binary_posts_guard_refused() {
    let hook = Receiver::answering(200, "");
    let config = format!(
        "{}guard: {{ max_clear_fraction: 0.25, min_clears: 1 }}\n\
         notify: [{{url_file: hook.url, format: feishu}}]\n",
        common::cli::EMBEDDED_CONFIG
    );
    let both = "groups:\n  \"@TGS#2PHYS101\":\n    marks:\n      1002: [student01, student02]\n";
    let dir = common::cli::embedded_dir(&config, both);
    let hook_file = dir.path().join("hook.url");
    std::fs::write(&hook_file, hook.url()).unwrap();
    std::fs::set_permissions(&hook_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = common::cli::marksync(dir.path(), &["apply"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(hook.bodies().is_empty(), "a success is not told");

    std::fs::write(
        dir.path().join("marks/physics.yaml"),
        "groups:\n  \"@TGS#2PHYS101\":\n    members: {}\n",
    )
    .unwrap();
    let out = common::cli::marksync(dir.path(), &["apply"]);
    assert_eq!(out.code, i32::from(exit::MASS_CLEAR), "{}", out.stderr);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["msg_type"], "text");
    let text = bodies[0]["content"]["text"].as_str().unwrap();
    assert!(
        text.contains("guard_refused") && text.contains("nothing was sent"),
        "{text}"
    );
}
