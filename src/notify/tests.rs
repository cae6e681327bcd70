use std::path::Path;

use serde_json::{Value, json};

use super::body::{self, Message, cut, judge};
use super::conditions::{Conditions, Transition};
use super::*;

fn message(event: Event, summary: &str, details: &str) -> Message {
    Message {
        event,
        app: 1400000000,
        summary: summary.into(),
        details: details.into(),
    }
}

fn body_json(format: Format, m: &Message) -> Value {
    serde_json::from_slice(&body::body(format, m)).unwrap()
}

/// The keys of a JSON object, sorted, recursively for nested objects: the shape a vendor checks.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        other => other.clone(),
    }
}

#[test]
fn every_format_has_its_vendors_documented_shape() {
    let m = message(
        Event::ApplyFailed,
        "apply failed (exit 1)",
        "stopped by a fatal API error",
    );
    let cases = [
        (
            Format::Json,
            json!({"event": "string", "app": "number", "summary": "string", "details": "string"}),
        ),
        (Format::Slack, json!({"text": "string"})),
        (
            Format::Wecom,
            json!({"msgtype": "string", "markdown": {"content": "string"}}),
        ),
        (
            Format::Dingtalk,
            json!({"msgtype": "string", "markdown": {"title": "string", "text": "string"}}),
        ),
        (
            Format::Feishu,
            json!({"msg_type": "string", "content": {"text": "string"}}),
        ),
    ];
    for (format, expected) in cases {
        let v = body_json(format, &m);
        assert_eq!(shape(&v), expected, "{format:?}: {v}");
    }
    assert_eq!(
        body_json(Format::Json, &m),
        json!({"event": "apply_failed", "app": 1400000000u64, "summary": "apply failed (exit 1)", "details": "stopped by a fatal API error"})
    );
    assert_eq!(body_json(Format::Wecom, &m)["msgtype"], "markdown");
    assert_eq!(body_json(Format::Dingtalk, &m)["msgtype"], "markdown");
    assert_eq!(
        body_json(Format::Dingtalk, &m)["markdown"]["title"],
        "marksync: apply_failed"
    );
    assert_eq!(body_json(Format::Feishu, &m)["msg_type"], "text");
    for format in [
        Format::Slack,
        Format::Wecom,
        Format::Dingtalk,
        Format::Feishu,
    ] {
        let text = body_json(format, &m).to_string();
        for needle in [
            "1400000000",
            "apply_failed",
            "apply failed (exit 1)",
            "fatal API error",
        ] {
            assert!(text.contains(needle), "{format:?} lacks {needle}: {text}");
        }
    }
}

#[test]
fn slack_text_escapes_its_control_characters() {
    let m = message(Event::Drift, "a <b> & c", "");
    assert_eq!(
        body_json(Format::Slack, &m)["text"],
        "*marksync* (app 1400000000) `drift`: a &lt;b&gt; &amp; c"
    );
}

#[test]
fn every_body_fits_its_vendors_limit_with_a_note_of_the_cut() {
    // Multi-byte characters and JSON escapes (quotes, newlines) on purpose.
    let details = "群组 \"g\" 第 1 行\n".repeat(2000);
    let m = message(
        Event::DesiredInvalid,
        "desired files do not parse",
        &details,
    );
    let text_of = |format: Format| -> String {
        let v = body_json(format, &m);
        match format {
            Format::Slack => v["text"].as_str().unwrap().to_string(),
            Format::Wecom => v["markdown"]["content"].as_str().unwrap().to_string(),
            Format::Dingtalk => v["markdown"]["text"].as_str().unwrap().to_string(),
            Format::Feishu => v["content"]["text"].as_str().unwrap().to_string(),
            Format::Json => v["details"].as_str().unwrap().to_string(),
        }
    };
    assert!(text_of(Format::Slack).len() <= body::SLACK_TEXT_BYTES);
    assert!(text_of(Format::Wecom).len() <= body::WECOM_CONTENT_BYTES);
    assert!(text_of(Format::Dingtalk).len() <= body::DINGTALK_TEXT_BYTES);
    assert!(body::body(Format::Feishu, &m).len() <= body::FEISHU_BODY_BYTES);
    assert!(text_of(Format::Json).len() <= body::MAX_DETAILS_BYTES);
    for format in Format::ALL {
        let text = text_of(format);
        assert!(
            text.contains("more bytes cut"),
            "{format:?}: no note of the cut"
        );
        // Close to the limit, not far below it: the cut keeps what fits.
        assert!(text.len() > 3000, "{format:?}: {} bytes", text.len());
    }
}

#[test]
fn cut_keeps_short_text_and_cuts_at_a_character_boundary() {
    assert_eq!(cut("short", 10), "short");
    let long = "é".repeat(100);
    let c = cut(&long, 60);
    assert!(c.len() <= 60, "{}", c.len());
    assert!(c.contains("more bytes cut"));
    // Tiny limits still respect the limit.
    assert!(cut(&long, 5).len() <= 5);
}

#[test]
fn answers_are_judged_as_each_vendor_documents_them() {
    let url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-secret-key";
    let ok = |f: Format, status: u16, body: &str| judge(f, status, body.as_bytes(), url);
    assert_eq!(ok(Format::Json, 204, ""), Ok(()));
    assert_eq!(ok(Format::Slack, 200, "ok"), Ok(()));
    assert_eq!(
        ok(Format::Wecom, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
        Ok(())
    );
    assert_eq!(
        ok(Format::Dingtalk, 200, r#"{"errcode":0,"errmsg":"ok"}"#),
        Ok(())
    );
    assert_eq!(
        ok(
            Format::Feishu,
            200,
            r#"{"code":0,"data":{},"msg":"success"}"#
        ),
        Ok(())
    );
    assert_eq!(
        ok(
            Format::Feishu,
            200,
            r#"{"StatusCode":0,"StatusMessage":"success"}"#
        ),
        Ok(())
    );

    // HTTP 200 with an error code in the body is a failure, not a delivery.
    let e = ok(
        Format::Wecom,
        200,
        r#"{"errcode":93000,"errmsg":"invalid webhook url, key 693a91f6-secret-key"}"#,
    )
    .unwrap_err();
    assert!(!e.retry);
    assert!(e.what.contains("errcode 93000"), "{}", e.what);
    assert!(
        !e.what.contains("693a91f6-secret-key"),
        "the key leaked: {}",
        e.what
    );
    let e = ok(
        Format::Dingtalk,
        200,
        r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
    )
    .unwrap_err();
    assert!(
        e.what.contains("errcode 310000") && e.what.contains("keywords"),
        "{}",
        e.what
    );
    let e = ok(Format::Feishu, 200, r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#).unwrap_err();
    assert!(e.what.contains("code 19021"), "{}", e.what);
    // A vendor's rate limit is worth another try.
    assert!(
        ok(
            Format::Wecom,
            200,
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
        )
        .unwrap_err()
        .retry
    );
    assert!(
        ok(
            Format::Dingtalk,
            200,
            r#"{"errcode":130101,"errmsg":"send too fast"}"#
        )
        .unwrap_err()
        .retry
    );
    // A 200 without the documented code is not taken as delivered.
    let e = ok(Format::Wecom, 200, "<html>proxy</html>").unwrap_err();
    assert!(e.what.contains("errcode"), "{}", e.what);

    // HTTP errors: 5xx and 429 are retried, other 4xx are not.
    assert!(ok(Format::Slack, 500, "").unwrap_err().retry);
    assert!(ok(Format::Slack, 429, "").unwrap_err().retry);
    let e = ok(Format::Slack, 404, "no_service").unwrap_err();
    assert!(!e.retry);
    assert!(
        e.what.contains("HTTP 404") && e.what.contains("no_service"),
        "{}",
        e.what
    );
    assert!(!ok(Format::Json, 302, "").unwrap_err().retry);
}

#[test]
fn a_condition_sends_once_when_it_starts_and_once_when_it_clears() {
    let mut c = Conditions::default();
    assert_eq!(c.observe(Event::Drift, false, "none"), None);
    assert_eq!(
        c.observe(Event::Drift, true, "3 lost"),
        Some(Transition {
            send: Event::Drift,
            condition: Event::Drift,
            summary: "3 lost".into()
        })
    );
    // Round after round of the same condition: nothing more.
    for _ in 0..5 {
        assert_eq!(c.observe(Event::Drift, true, "4 lost"), None);
    }
    // Another condition is independent.
    assert_eq!(
        c.observe(Event::GuardRefused, true, "clears 90%")
            .map(|t| t.send),
        Some(Event::GuardRefused)
    );
    let cleared = c.observe(Event::Drift, false, "no drift").unwrap();
    assert_eq!(cleared.send, Event::Recovered);
    assert_eq!(cleared.condition, Event::Drift);
    assert!(
        cleared.summary.contains("drift cleared") && cleared.summary.contains("3 lost"),
        "{}",
        cleared.summary
    );
    assert_eq!(c.observe(Event::Drift, false, "no drift"), None);
    assert!(c.is_up(Event::GuardRefused));
    // And it can start again.
    assert!(c.observe(Event::Drift, true, "1 gone").is_some());
}

#[test]
fn webhook_urls_must_be_https_or_loopback_http_and_are_never_quoted() {
    assert_eq!(check_url("https://hooks.slack.com/services/T/B/X"), Ok(()));
    assert_eq!(check_url("http://127.0.0.1:8080/hook"), Ok(()));
    assert_eq!(check_url("http://[::1]:8080/hook"), Ok(()));
    assert_eq!(check_url("http://localhost/hook"), Ok(()));
    for bad in [
        "http://hooks.example.com/secret-token",
        "ftp://example.com/secret-token",
        "secret-token",
    ] {
        let e = check_url(bad).unwrap_err();
        assert!(!e.contains("secret-token"), "{e}");
    }
    assert_eq!(
        format!("{:?}", WebhookUrl("https://x/secret".into())),
        "WebhookUrl(***)"
    );
}

fn config(extra: &str) -> Result<Config, String> {
    let text = format!("sdkappid: 1400000000\nidentifier: admin\ndesired: m\n{extra}");
    crate::config::parse(Path::new("conf/marksync.yaml"), &text).map_err(|d| d.to_string())
}

#[test]
fn notify_entries_are_read_with_defaults() {
    let c = config(
        "notify:\n  - url_file: slack.url\n    format: slack\n    on: [guard_refused, drift]\n  - url_env: WECOM_URL\n    format: wecom\n",
    )
    .unwrap();
    assert_eq!(c.notify.len(), 2);
    assert_eq!(
        c.notify[0].url,
        UrlSource::File(Path::new("conf/slack.url").to_path_buf())
    );
    assert_eq!(c.notify[0].format, Format::Slack);
    assert_eq!(c.notify[0].on, vec![Event::Drift, Event::GuardRefused]);
    assert_eq!(c.notify[0].at, (5, 5));
    assert_eq!(c.notify[1].url, UrlSource::Env("WECOM_URL".into()));
    assert_eq!(c.notify[1].on, Event::ALL.to_vec());
    assert!(config("").unwrap().notify.is_empty());
}

#[test]
fn notify_mistakes_are_reported_at_their_place() {
    let cases: &[(&str, &str)] = &[
        (
            "notify:\n  - format: slack\n",
            "conf/marksync.yaml:5:5: error: `notify[0]` needs `url_file` (a file holding the webhook URL) or `url_env`",
        ),
        (
            "notify:\n  - {url_file: a, url_env: B, format: json}\n",
            "conf/marksync.yaml:5:5: error: `notify[0]` has both `url_file` and `url_env`; keep one",
        ),
        (
            "notify:\n  - {url_file: a, format: teams}\n",
            "conf/marksync.yaml:5:27: error: `notify[0].format`: unknown format \"teams\"; known formats: json, slack, wecom, dingtalk, feishu",
        ),
        (
            "notify:\n  - {url_file: a, format: json, on: [drift, apply_fail]}\n",
            "error: `notify[0].on`: unknown event \"apply_fail\"; known events: drift, apply_failed, guard_refused, desired_invalid, takeover, recovered",
        ),
        (
            "notify:\n  - {url_file: a}\n",
            "error: `notify[0]` needs `format`: one of json, slack, wecom, dingtalk, feishu",
        ),
        (
            "notify:\n  - {url_env: \"https://hooks.slack.com/x\", format: slack}\n",
            "`notify[0].url_env` names an environment variable (letters, digits and _, not starting with a digit), found a URL",
        ),
        (
            "notify:\n  - {url_file: a, format: json, on: []}\n",
            "`notify[0].on` is empty",
        ),
        (
            "notify:\n  - {url_file: a, format: json, url: b}\n",
            "unknown key `url`",
        ),
        (
            "notify: {url_file: a}\n",
            "`notify` must be a list of webhooks",
        ),
    ];
    for (text, expected) in cases {
        let e = config(text).unwrap_err();
        assert!(e.contains(expected), "{text}\n got: {e}\n want: {expected}");
        assert!(!e.contains("hooks.slack.com"), "the URL leaked: {e}");
    }
}

#[test]
fn a_url_file_others_can_read_is_refused_and_a_missing_variable_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hook.url");
    std::fs::write(&file, "https://hooks.slack.com/services/T/B/secret-token\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "notify:\n  - {{url_file: {}, format: slack}}\n",
        file.display()
    );
    let mut c = config(&text).unwrap();
    let e = Notifier::check(&c).unwrap_err().to_string();
    assert!(
        e.contains("conf/marksync.yaml:5:5: error: `notify[0]` (slack): the webhook URL file")
            && e.contains("can be read by other users (mode 644)")
            && e.contains("chmod 600"),
        "{e}"
    );
    assert!(!e.contains("secret-token"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Notifier::check(&c).unwrap();
    // Not a usable URL: said without quoting it.
    std::fs::write(&file, "http://hooks.example.com/secret-token\n").unwrap();
    let e = Notifier::check(&c).unwrap_err().to_string();
    assert!(
        e.contains("plain http is only allowed to this machine"),
        "{e}"
    );
    assert!(!e.contains("secret-token"), "{e}");

    c.notify[0].url = UrlSource::Env("MARKSYNC_TEST_SURELY_UNSET_HOOK".into());
    let e = Notifier::check(&c).unwrap_err().to_string();
    assert!(
        e.contains("environment variable MARKSYNC_TEST_SURELY_UNSET_HOOK (`url_env`) is not set"),
        "{e}"
    );
}
