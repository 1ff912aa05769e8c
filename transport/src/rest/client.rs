//! The HTTP client sink.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{status_error, MESSAGE_ID};
use crate::item::{BoxFuture, Delivery, Item, Sink};
use crate::{Error, ErrorKind};

/// How the client authenticates.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// A fixed bearer token.
    Bearer(String),
    /// OAuth 2.0 client credentials: a token fetched from the token
    /// endpoint, cached until shortly before it expires.
    ClientCredentials(OAuth2),
}

impl std::fmt::Debug for Auth {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::ClientCredentials(o) => f.debug_tuple("ClientCredentials").field(o).finish(),
        }
    }
}

/// OAuth 2.0 client-credentials settings (RFC 6749 §4.4).
#[derive(Clone)]
pub struct OAuth2 {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The scope to ask for, if any.
    pub scope: Option<String>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// What the body is, as told in `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BodyFormat {
    /// HL7 v2 as is: `application/hl7-v2`.
    #[default]
    Hl7,
    /// The lab contract as JSON: `application/json`.
    Json,
}

impl BodyFormat {
    fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Hl7 => "application/hl7-v2",
            BodyFormat::Json => "application/json",
        }
    }
}

/// Settings of an [`HttpSink`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long to wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long one request may take, from connect to the last byte of the answer.
    pub timeout: Duration,
    /// Authentication.
    pub auth: Auth,
    /// What is posted.
    pub format: BodyFormat,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            auth: Auth::None,
            format: BodyFormat::Hl7,
        }
    }
}

/// Posts each item to a URL.
///
/// The item's bytes are the body; its id goes in the `Message-Id` header so
/// that a receiver can drop a re-sent message. Any `2xx` is a delivery; a
/// body that is an HL7 message (an ACK) is returned in [`Delivery::ack`].
/// Other statuses map through [`status_error`]; a `401` with OAuth2 fetches
/// a new token and tries once more. Timeouts and refused connections are
/// retryable. Errors name the URL and the status, never the body.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use transport::layers::{Retry, RetryPolicy};
/// use transport::rest::{Auth, HttpOptions, HttpSink};
/// use transport::{Item, Sink};
///
/// # async fn f() -> Result<(), transport::Error> {
/// let opts = HttpOptions { auth: Auth::Bearer("s3cret".into()), timeout: Duration::from_secs(5), ..Default::default() };
/// let sink = Retry::new(HttpSink::new("https://emr.example/api/hl7", opts)?, RetryPolicy::default());
/// sink.deliver(&Item::new("17", "MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240117||ORU^R01|R17|P|2.5.1\r")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpSink {
    url: String,
    client: reqwest::Client,
    opts: HttpOptions,
    token: Mutex<Option<(String, Instant)>>,
}

/// How long before its announced expiry a cached token is replaced.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

impl HttpSink {
    /// A sink posting to `url`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the URL is not `http://` or `https://`,
    /// or the HTTP client cannot be built.
    pub fn new(url: impl Into<String>, opts: HttpOptions) -> Result<HttpSink, Error> {
        let url = url.into();
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| Error::new(ErrorKind::Config, format!("bad URL: {e}")).with_peer(url.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::new(ErrorKind::Config, "not an http(s) URL").with_peer(url));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .build()
            .map_err(|e| Error::new(ErrorKind::Config, format!("HTTP client: {e}")).with_source(e))?;
        Ok(HttpSink { url, client, opts, token: Mutex::new(None) })
    }

    /// The URL posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn bearer(&self, fresh: bool) -> Result<Option<String>, Error> {
        let oauth = match &self.opts.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(t) => return Ok(Some(t.clone())),
            Auth::ClientCredentials(o) => o,
        };
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if !fresh && Instant::now() < *until {
                return Ok(Some(token.clone()));
            }
        }
        let (token, lifetime) = self.fetch_token(oauth).await.map_err(|e| e.with_peer(oauth.token_url.clone()))?;
        *cached = Some((token.clone(), Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN)));
        Ok(Some(token))
    }

    async fn fetch_token(&self, o: &OAuth2) -> Result<(String, Duration), Error> {
        let mut form = format!("grant_type=client_credentials&client_id={}", form_encode(&o.client_id));
        form.push_str(&format!("&client_secret={}", form_encode(&o.client_secret)));
        if let Some(scope) = &o.scope {
            form.push_str(&format!("&scope={}", form_encode(scope)));
        }
        let resp = self
            .client
            .post(&o.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status().as_u16();
        if let Some(e) = status_error(status) {
            // The token endpoint refusing the client is an operator's matter
            // whatever the 4xx; a 5xx may pass.
            let kind = if e.is_retryable() { e.kind() } else { ErrorKind::Hold };
            return Err(Error::new(kind, format!("token request: {e}")));
        }
        let body = resp.bytes().await.map_err(request_error)?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| Error::new(ErrorKind::Protocol, "token response is not JSON"))?;
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "token response has no access_token"))?;
        let lifetime = json.get("expires_in").and_then(|t| t.as_u64()).unwrap_or(300);
        Ok((token.to_owned(), Duration::from_secs(lifetime)))
    }

    async fn post(&self, item: &Item, token: Option<&str>) -> Result<reqwest::Response, Error> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", self.opts.format.content_type())
            .header(MESSAGE_ID, &item.id)
            .body(item.bytes.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.map_err(request_error)
    }

    async fn exchange(&self, item: &Item) -> Result<Delivery, Error> {
        let token = self.bearer(false).await?;
        let mut resp = self.post(item, token.as_deref()).await?;
        if resp.status().as_u16() == 401 && matches!(self.opts.auth, Auth::ClientCredentials(_)) {
            tracing::info!(url = %self.url, "token refused; fetching a new one");
            let token = self.bearer(true).await?;
            resp = self.post(item, token.as_deref()).await?;
        }
        if let Some(e) = status_error(resp.status().as_u16()) {
            return Err(e);
        }
        let body = resp.bytes().await.map_err(request_error)?;
        let ack = if body.starts_with(b"MSH") { Some(body) } else { None };
        Ok(Delivery { ack, warning: None })
    }
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            self.exchange(item).await.map_err(|e| if e.peer().is_some() { e } else { e.with_peer(self.url.clone()) })
        })
    }
}

fn request_error(e: reqwest::Error) -> Error {
    // reqwest's Display includes the URL, which the peer already names.
    let e = e.without_url();
    let (kind, what) = if e.is_timeout() {
        (ErrorKind::Timeout, "timed out")
    } else if e.is_connect() {
        (ErrorKind::Connect, "connect")
    } else if e.is_body() || e.is_decode() {
        (ErrorKind::Closed, "reading the answer")
    } else {
        (ErrorKind::Io, "request")
    };
    let text = match std::error::Error::source(&e) {
        Some(src) => format!("{what}: {e}: {src}"),
        None => format!("{what}: {e}"),
    };
    Error::new(kind, text).with_source(e)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let opts = HttpOptions {
            auth: Auth::ClientCredentials(OAuth2 {
                token_url: "http://t".into(),
                client_id: "lab".into(),
                client_secret: "hunter2".into(),
                scope: None,
            }),
            ..HttpOptions::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
    }

    #[test]
    fn only_http_urls() {
        assert_eq!(HttpSink::new("ftp://x/y", HttpOptions::default()).unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(HttpSink::new("not a url", HttpOptions::default()).unwrap_err().kind(), ErrorKind::Config);
    }
}
