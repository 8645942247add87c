//! Sending email (password-reset links): over SMTP with `[smtp]`, or, on the zero-configuration
//! default, into `data_dir/outbox/` — one file per message, headers and body as they would have
//! been sent — with a log line naming the file.

use std::path::PathBuf;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use portcullis_core::Timestamp;

use crate::settings::{Settings, SettingsError, SmtpTls};

/// Where messages go.
pub enum Mailer {
    Outbox { dir: PathBuf, from: Mailbox },
    Smtp { transport: Box<AsyncSmtpTransport<Tokio1Executor>>, from: Mailbox, server: String },
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the address cannot receive mail: {0}")]
    Address(String),
    #[error("the message cannot be built: {0}")]
    Build(String),
    #[error("the outbox: {0}")]
    Outbox(std::io::Error),
    #[error("the SMTP server: {0}")]
    Smtp(String),
}

impl Mailer {
    /// The mailer `[smtp]` describes; a setting that cannot work is named.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let smtp = &settings.smtp;
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| SettingsError::Invalid(format!("smtp.from is not an email address ({e}): {:?}", smtp.from)))?;
        let Some(url) = &smtp.url else { return Ok(Self::Outbox { dir: settings.outbox_dir(), from }) };
        let bad = |why: &str| SettingsError::Invalid(format!("smtp.url {why}: use smtp://[user:password@]host[:port]"));
        let parsed = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
        if parsed.scheme() != "smtp" {
            return Err(bad("must start with smtp://"));
        }
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("has no host"))?.to_owned();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let relay = |e: lettre::transport::smtp::Error| SettingsError::Invalid(format!("smtp.url: {e}"));
        let (builder, default_port) = match smtp.tls {
            SmtpTls::Starttls => (AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(relay)?, 587),
            SmtpTls::Tls => (AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(relay)?, 465),
            SmtpTls::None => (AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host), 25),
        };
        let port = parsed.port().unwrap_or(default_port);
        let mut builder = builder.port(port).timeout(Some(std::time::Duration::from_secs(10)));
        if let Some((user, password)) = url_credentials(&parsed) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self::Smtp { transport: Box::new(builder.build()), from, server: format!("{host}:{port}") })
    }

    /// What the start-up line says about mail.
    pub fn describe(&self) -> String {
        match self {
            Self::Outbox { dir, .. } => format!("mail to files in {}", dir.display()),
            Self::Smtp { server, .. } => format!("mail through {server}"),
        }
    }

    /// Sends a plain-text message to `to`; `now` names an outbox file.
    pub async fn send(&self, to: &str, subject: &str, body: String, now: Timestamp) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        let from = match self {
            Self::Outbox { from, .. } | Self::Smtp { from, .. } => from.clone(),
        };
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        match self {
            Self::Outbox { dir, .. } => {
                let path = write_to_outbox(dir, &message.formatted(), now).map_err(MailError::Outbox)?;
                tracing::info!(path = %path.display(), "no [smtp] settings: the message is in the outbox");
                Ok(())
            }
            Self::Smtp { transport, .. } => {
                transport.send(message).await.map(drop).map_err(|e| MailError::Smtp(e.to_string()))
            }
        }
    }
}

/// The user and password of an `smtp://user:password@host` URL, percent-decoded (a `+` stays
/// a `+`: this is a URL's user information, not a form).
fn url_credentials(url: &url::Url) -> Option<(String, String)> {
    if url.username().is_empty() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some((decode(url.username()), url.password().map(decode).unwrap_or_default()))
}

/// Writes one message into `dir` (made 0700 if missing) as a file of its own (0600: it holds a
/// live link), named by the time so a listing sorts oldest first; its path.
fn write_to_outbox(dir: &std::path::Path, bytes: &[u8], now: Timestamp) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let mut random = [0u8; 6];
    portcullis_core::secret::fill_random(&mut random);
    let name = format!("{:013}-{}.eml", now.unix_millis(), portcullis_core::secret::b64(&random));
    let path = dir.join(name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&path)?;
    file.write_all(bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer(edit: impl FnOnce(&mut Settings)) -> Result<Mailer, SettingsError> {
        let mut settings = Settings { data_dir: "/nonexistent/data".into(), ..Settings::default() };
        edit(&mut settings);
        Mailer::from_settings(&settings)
    }

    #[tokio::test]
    async fn smtp_settings_that_cannot_work_stop_start_up_with_their_name() {
        for (url, why) in [
            ("mail.example.com", "is not a URL"),
            ("http://mail.example.com", "must start with smtp://"),
            ("smtp://", "has no host"),
        ] {
            let Err(e) = mailer(|s| s.smtp.url = Some(url.into())) else { panic!("{url} accepted") };
            let message = e.to_string();
            assert!(message.contains("smtp.url") && message.contains(why), "{url}: {message}");
        }
        let Err(e) = mailer(|s| s.smtp.from = "not an address".into()) else { panic!("a bad from accepted") };
        assert!(e.to_string().contains("smtp.from"), "{e}");
    }

    #[tokio::test]
    async fn the_outbox_is_the_default_and_an_smtp_url_picks_its_port_by_tls_mode() {
        let outbox = mailer(|_| {}).expect("the default");
        assert_eq!(outbox.describe(), "mail to files in /nonexistent/data/outbox");
        let cases = [
            ("smtp://mail.example.com", SmtpTls::Starttls, "mail.example.com:587"),
            ("smtp://mail.example.com", SmtpTls::Tls, "mail.example.com:465"),
            ("smtp://127.0.0.1", SmtpTls::None, "127.0.0.1:25"),
            ("smtp://me%40example.com:p%40ss@[::1]:2525", SmtpTls::None, "::1:2525"),
        ];
        for (url, tls, server) in cases {
            let m = mailer(|s| {
                s.smtp.url = Some(url.into());
                s.smtp.tls = tls;
            })
            .expect(url);
            assert_eq!(m.describe(), format!("mail through {server}"), "{url}");
        }
    }

    #[test]
    fn smtp_credentials_are_percent_decoded_and_keep_plus_signs() {
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert_eq!(url_credentials(&url("smtp://mail.example.com")), None);
        let got = url_credentials(&url("smtp://me%40example.com:p+a%40ss%2B@mail.example.com:587"));
        assert_eq!(got, Some(("me@example.com".into(), "p+a@ss+".into())));
    }

    #[test]
    fn outbox_files_are_private_and_sort_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = dir.path().join("outbox");
        let later = write_to_outbox(&outbox, b"second", Timestamp::from_unix_millis(2_000)).expect("write");
        let earlier = write_to_outbox(&outbox, b"first", Timestamp::from_unix_millis(1_000)).expect("write");
        assert!(earlier < later, "{earlier:?} sorts before {later:?}");
        assert_eq!(std::fs::read(&earlier).expect("read"), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&outbox), 0o700);
            assert_eq!(mode(&earlier), 0o600);
        }
    }
}
