//! Credentials failures in the user's terms (SPEC 11). The crate's standard chain finds the
//! credentials; when it uses a web identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` with
//! `AWS_ROLE_ARN`, as CI OIDC and Kubernetes service accounts give them), a failure to get them
//! is phrased here, naming the variables to check, instead of the crate's request dump. The
//! token is never part of a message.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use object_store::CredentialProvider;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider};

/// A web identity exchange as the chain will make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WebIdentity {
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
    token_file: String,
    /// `AWS_ROLE_ARN`.
    role_arn: String,
    /// The STS endpoint (`AWS_ENDPOINT_URL_STS`, else the region's).
    sts: String,
}

impl WebIdentity {
    /// The exchange the builder's chain will make: `None` when static keys are set (they come
    /// first in the chain) or no token file and role are.
    pub(super) fn of(b: &AmazonS3Builder) -> Option<WebIdentity> {
        let get = |key| b.get_config_value(&key).filter(|v| !v.is_empty());
        if get(AmazonS3ConfigKey::AccessKeyId).is_some()
            || get(AmazonS3ConfigKey::SecretAccessKey).is_some()
        {
            return None;
        }
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        Some(WebIdentity {
            token_file: get(AmazonS3ConfigKey::WebIdentityTokenFile)?,
            role_arn: get(AmazonS3ConfigKey::RoleArn)?,
            sts: get(AmazonS3ConfigKey::StsEndpoint)
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
        })
    }

    /// `inner` (the chain's provider), its failures phrased by [`WebIdentity::explain`].
    pub(super) fn wrap(self, inner: AwsCredentialProvider) -> AwsCredentialProvider {
        Arc::new(Phrased {
            inner,
            exchange: self,
        })
    }

    /// What went wrong, from the crate's error text and the token file as it reads now.
    fn explain(&self, said: &str, token: std::io::Result<String>) -> String {
        let head = "cannot get credentials by web identity";
        let file = format!("{} (AWS_WEB_IDENTITY_TOKEN_FILE)", self.token_file);
        let token = match token {
            Err(e) => {
                return format!(
                    "{head}: the token file {file} cannot be read: {}; check the variable and \
                     the volume or step that writes the token",
                    io_reason(&e)
                );
            }
            Ok(t) => t,
        };
        let scrub = |s: &str| {
            let t = token.trim();
            if t.is_empty() {
                s.to_string()
            } else {
                s.replace(t, "***")
            }
        };
        let sts = format!("STS {} (AWS_ENDPOINT_URL_STS)", self.sts);
        let status = http_status(said);
        let text = if let Some(status @ 500..) = status {
            let code = xml_field(said, "Code")
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!("{sts} failed with HTTP {status}{code}; try again later")
        } else if let Some(code) = xml_field(said, "Code") {
            let message = xml_field(said, "Message")
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!(
                "{sts} refused role {} (AWS_ROLE_ARN) for the token in {file}: {code}{message}; \
                 check the role's trust policy (issuer, audience, subject) and that the token \
                 is current",
                self.role_arn
            )
        } else if said.contains("Invalid AssumeRoleWithWebIdentity response") {
            format!("{sts} answered, but not with AssumeRoleWithWebIdentity credentials")
        } else if let Some(status) = status {
            format!("{sts} answered HTTP {status}")
        } else if said.contains("invalid peer certificate") {
            format!(
                "{sts} presented a certificate that is not trusted ({}); a private CA's \
                 certificate goes in SSL_CERT_FILE",
                innermost(said)
            )
        } else {
            format!(
                "{sts} cannot be reached over https (the connection said: {})",
                innermost(said)
            )
        };
        format!("{head}: {}", scrub(&text))
    }
}

/// A credentials failure, already phrased for the user.
#[derive(Debug)]
pub(crate) struct CredentialsError(pub(crate) String);

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CredentialsError {}

/// The chain's provider with its failures phrased.
#[derive(Debug)]
struct Phrased {
    inner: AwsCredentialProvider,
    exchange: WebIdentity,
}

impl CredentialProvider for Phrased {
    type Credential = AwsCredential;

    // The trait is declared with `async_trait`; this is its expansion, so no macro crate is
    // needed for one method.
    fn get_credential<'a, 'b>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = object_store::Result<Arc<AwsCredential>>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.inner.get_credential().await.map_err(|e| {
                let said = error_chain(&e);
                let token = std::fs::read_to_string(&self.exchange.token_file);
                object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(CredentialsError(self.exchange.explain(&said, token))),
                }
            })
        })
    }
}

/// An error and its sources, one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The last part of an error chain's text (the cause nearest the system).
fn innermost(said: &str) -> &str {
    said.rsplit(": ").next().unwrap_or(said).trim()
}

/// The text of the first `<name>...</name>` in `text`.
fn xml_field(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].trim().to_string()).filter(|s| !s.is_empty())
}

/// The HTTP status in the crate's "non-2xx status code: NNN" wording.
fn http_status(said: &str) -> Option<u16> {
    let at = said.find("status code: ")? + "status code: ".len();
    said[at..].get(..3)?.parse().ok()
}

/// An OS error as a short phrase.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "not found".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "it is a directory".into(),
        ErrorKind::InvalidData => "it is not UTF-8 text".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> WebIdentity {
        WebIdentity {
            token_file: "/var/run/secrets/token".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            sts: "https://sts.example".into(),
        }
    }

    #[test]
    fn the_chain_uses_web_identity_only_without_static_keys() {
        let b = AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, "/t")
            .with_config(AmazonS3ConfigKey::RoleArn, "arn:r")
            .with_region("eu-west-1");
        assert_eq!(
            WebIdentity::of(&b),
            Some(WebIdentity {
                token_file: "/t".into(),
                role_arn: "arn:r".into(),
                sts: "https://sts.eu-west-1.amazonaws.com".into(),
            })
        );
        assert_eq!(WebIdentity::of(&b.clone().with_access_key_id("AK")), None);
        assert_eq!(
            WebIdentity::of(&AmazonS3Builder::new().with_config(AmazonS3ConfigKey::RoleArn, "r")),
            None
        );
    }

    #[test]
    fn each_failure_names_what_to_check_and_never_the_token() {
        let x = exchange();
        let cases: Vec<(&str, std::io::Result<String>, &[&str])> = vec![
            (
                "Failed to read token file",
                Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
                &[
                    "the token file /var/run/secrets/token (AWS_WEB_IDENTITY_TOKEN_FILE) cannot be read: not found",
                ],
            ),
            (
                "Error performing POST REDACTED in 3ms - Server returned non-2xx status code: 403 Forbidden: <ErrorResponse><Error><Code>AccessDenied</Code><Message>Token tok-123 expired</Message></Error></ErrorResponse>",
                Ok("tok-123\n".into()),
                &[
                    "STS https://sts.example (AWS_ENDPOINT_URL_STS) refused role arn:aws:iam::1:role/r (AWS_ROLE_ARN)",
                    "AccessDenied: Token *** expired",
                ],
            ),
            (
                "Invalid AssumeRoleWithWebIdentity response: missing field",
                Ok("tok-123".into()),
                &["answered, but not with AssumeRoleWithWebIdentity credentials"],
            ),
            (
                "Error performing POST REDACTED in 3ms - Server returned non-2xx status code: 502 Bad Gateway: ",
                Ok("tok-123".into()),
                &["failed with HTTP 502; try again later"],
            ),
            (
                "Error performing POST REDACTED in 3ms - Server returned non-2xx status code: 503 Service Unavailable: <ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>",
                Ok("tok-123".into()),
                &["failed with HTTP 503 (ServiceUnavailable)"],
            ),
            (
                "Error performing POST REDACTED in 3ms - Server returned non-2xx status code: 404 Not Found: ",
                Ok("tok-123".into()),
                &["answered HTTP 404"],
            ),
            (
                "Error performing POST REDACTED in 3ms - HTTP error: error sending request: client error (Connect): invalid peer certificate: UnknownIssuer",
                Ok("tok-123".into()),
                &[
                    "presented a certificate that is not trusted (UnknownIssuer); a private CA's certificate goes in SSL_CERT_FILE",
                ],
            ),
            (
                "Error performing POST REDACTED in 3ms, after 2 retries - HTTP error: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)",
                Ok("tok-123".into()),
                &[
                    "cannot be reached over https (the connection said: Connection refused (os error 111))",
                ],
            ),
        ];
        for (said, token, expected) in cases {
            let text = x.explain(said, token);
            assert!(
                text.starts_with("cannot get credentials by web identity: "),
                "{text}"
            );
            for e in expected {
                assert!(text.contains(e), "{e:?} in {text}");
            }
            for library in [
                "tok-123",
                "Error performing",
                "REDACTED",
                "<Code>",
                "Failed to",
            ] {
                assert!(!text.contains(library), "{library:?} in {text}");
            }
        }
    }
}
