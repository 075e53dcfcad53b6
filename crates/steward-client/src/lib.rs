//! A typed async HTTP client for Steward's REST API, used by the `steward` CLI
//! and by the integration tests.
//!
//! ```no_run
//! # async fn example() -> Result<(), steward_client::ClientError> {
//! let client = steward_client::Client::new("http://127.0.0.1:8080", Some("stwt_...".into()));
//! let agents = client.list_agents(&Default::default()).await?;
//! for agent in agents.items {
//!     println!("{} is {}", agent.name, agent.state.as_str());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every endpoint has one method (see [`Client`]); errors the server answers
//! with arrive as [`ClientError::Api`] carrying the catalogue's code.
//! [`Client::raw`] sends arbitrary bytes, for tests of malformed requests.
#![deny(missing_docs)]

mod approvals;
mod authzen;
mod behaviour;
mod delegation;
mod endpoints;
mod error;
mod mcp;
mod policies;
mod quotas;
mod recert;
mod webhooks;

pub use delegation::JWT_TOKEN_TYPE;
pub use endpoints::AgentTransition;
pub use error::ClientError;
/// HTTP methods, for [`Client::raw`].
pub use reqwest::Method;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use steward_types::ErrorBody;

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long to wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an unexpected body to quote in an error message.
const BODY_SNIPPET_CHARS: usize = 200;

/// A connection to one Steward server, with an optional bearer credential
/// (an admin or auditor API token `stwt_...`, or an agent key `stw_...`).
///
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base_url` (for example
    /// `http://127.0.0.1:8080`), sending `token` as a bearer credential.
    ///
    /// An invalid URL is reported by the first call, as
    /// [`ClientError::Transport`].
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("steward-client/", env!("CARGO_PKG_VERSION")))
            .build()
            // Building only fails when the TLS backend cannot initialise,
            // and this client is built without TLS.
            .unwrap_or_default();
        Client {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// A copy of this client that authenticates with `token` instead, sharing
    /// the connection pool (for example to act as an agent with its key).
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// A copy of this client that sends no credential at all.
    pub fn without_token(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bearer credential this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Send any request and return the status and the body parsed as JSON,
    /// whatever the status. For tests that send malformed bodies or odd
    /// content types: `body` is sent verbatim, with `content_type` when given.
    ///
    /// `path` is appended to the base URL as written (include any query).
    /// An empty body reads as `null`; a body that is not JSON reads as a JSON
    /// string holding the text. Only transport failures are errors.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        content_type: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut request = self.request_path(method, path);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Ok((status, value))
    }

    /// `GET path` and return the JSON body; error statuses become
    /// [`ClientError::Api`]. `path` may carry a query string.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        execute(self.request_path(Method::GET, path)).await
    }

    /// `POST path` with a JSON body and return the JSON answer; error statuses
    /// become [`ClientError::Api`].
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        execute(self.request_path(Method::POST, path).json(body)).await
    }

    /// A request to `base_url + path`, with the credential.
    fn request_path(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let separator = if path.starts_with('/') { "" } else { "/" };
        let url = format!("{}{separator}{path}", self.base_url);
        self.authorize(self.http.request(method, url))
    }

    /// A request to the path made of `segments`, each percent-encoded, so ids
    /// and names (`Code Review Bot`, `alice@example.com`) are safe to pass.
    fn request(&self, method: Method, segments: &[&str]) -> Result<reqwest::RequestBuilder> {
        let mut url = reqwest::Url::parse(&self.base_url).map_err(|err| {
            ClientError::Transport(format!("invalid server URL {:?}: {err}", self.base_url))
        })?;
        url.path_segments_mut()
            .map_err(|()| {
                ClientError::Transport(format!(
                    "invalid server URL {:?}: it cannot have a path",
                    self.base_url
                ))
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(self.authorize(self.http.request(method, url)))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET` a resource.
    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        execute(self.request(Method::GET, segments)?).await
    }

    /// `GET` a list with query parameters (absent options are left out).
    async fn get_query<T, Q>(&self, segments: &[&str], query: &Q) -> Result<T>
    where
        T: DeserializeOwned,
        Q: Serialize + ?Sized,
    {
        execute(self.request(Method::GET, segments)?.query(query)).await
    }

    /// `POST` a JSON body.
    async fn post<T, B>(&self, segments: &[&str], body: &B) -> Result<T>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        execute(self.request(Method::POST, segments)?.json(body)).await
    }

    /// `PUT` a JSON body (replace a singleton resource).
    async fn put<T, B>(&self, segments: &[&str], body: &B) -> Result<T>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        execute(self.request(Method::PUT, segments)?.json(body)).await
    }

    /// `DELETE` a resource; success has no body.
    async fn delete(&self, segments: &[&str]) -> Result<()> {
        let response = self.request(Method::DELETE, segments)?.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_from_body(status.as_u16(), &bytes))
        }
    }

    /// `GET` a plain-text resource.
    async fn get_text(&self, segments: &[&str]) -> Result<String> {
        let response = self.request(Method::GET, segments)?.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            Err(error_from_body(status.as_u16(), &bytes))
        }
    }

    /// `PATCH` a JSON body.
    async fn patch<T, B>(&self, segments: &[&str], body: &B) -> Result<T>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        execute(self.request(Method::PATCH, segments)?.json(body)).await
    }
}

/// Send a request; decode a success as `T` and an error status as the API's
/// error body.
async fn execute<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<T> {
    decode(request.send().await?).await
}

/// Decode a response: a success as `T`, an error status as the API's error
/// body.
pub(crate) async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    decode_with(response, error_from_body).await
}

/// [`decode`], with `error` turning an error status and body into the
/// client's error (endpoints whose errors have another shape).
pub(crate) async fn decode_with<T: DeserializeOwned>(
    response: reqwest::Response,
    error: fn(u16, &[u8]) -> ClientError,
) -> Result<T> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if status.is_success() {
        serde_json::from_slice(&bytes).map_err(|err| {
            ClientError::Decode(format!(
                "HTTP {status}: {err} in {}",
                snippet(&bytes, BODY_SNIPPET_CHARS)
            ))
        })
    } else {
        Err(error(status.as_u16(), &bytes))
    }
}

/// Turn an error response into [`ClientError::Api`], or into
/// [`ClientError::Decode`] when the body is not the API's error shape (a
/// proxy's HTML page, for instance).
fn error_from_body(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status,
            detail: Box::new(error),
        },
        Err(_) => ClientError::Decode(format!(
            "HTTP {status} without an error body: {}",
            snippet(body, BODY_SNIPPET_CHARS)
        )),
    }
}

/// The start of a body, as text, for error messages.
fn snippet(body: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_types::ErrorCode;

    fn url_of(client: &Client, segments: &[&str]) -> String {
        let request = client
            .request(Method::GET, segments)
            .unwrap()
            .build()
            .unwrap();
        request.url().to_string()
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let client = Client::new("http://127.0.0.1:8080/", None);
        assert_eq!(
            url_of(&client, &["v1", "agents", "Code Review Bot"]),
            "http://127.0.0.1:8080/v1/agents/Code%20Review%20Bot"
        );
        assert_eq!(
            url_of(&client, &["v1", "humans", "a/b?c#d"]),
            "http://127.0.0.1:8080/v1/humans/a%2Fb%3Fc%23d"
        );
    }

    #[test]
    fn a_base_url_with_a_path_keeps_it() {
        let client = Client::new("http://proxy.example/steward/", None);
        assert_eq!(
            url_of(&client, &["v1", "whoami"]),
            "http://proxy.example/steward/v1/whoami"
        );
    }

    #[test]
    fn an_invalid_base_url_is_a_transport_error() {
        let client = Client::new("not a url", None);
        let err = client.request(Method::GET, &["v1"]).unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    }

    #[test]
    fn the_token_is_sent_as_a_bearer_credential() {
        let client = Client::new("http://127.0.0.1:1", None).with_token("stwt_abc");
        let request = client
            .request(Method::GET, &["v1", "whoami"])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            request.headers()[reqwest::header::AUTHORIZATION],
            "Bearer stwt_abc"
        );
        let anonymous = client.without_token();
        let request = anonymous
            .request(Method::GET, &["v1", "whoami"])
            .unwrap()
            .build()
            .unwrap();
        assert!(
            request
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .is_none()
        );
    }

    #[test]
    fn list_queries_leave_out_absent_filters() {
        let client = Client::new("http://127.0.0.1:1", None);
        let filter = steward_types::AgentFilter {
            state: Some("active".into()),
            orphaned: Some(true),
            limit: Some(5),
            ..Default::default()
        };
        let request = client
            .request(Method::GET, &["v1", "agents"])
            .unwrap()
            .query(&filter)
            .build()
            .unwrap();
        assert_eq!(
            request.url().query(),
            Some("state=active&orphaned=true&limit=5")
        );
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"code":"not_found","message":"no agent x","docs":"d"}}"#;
        let err = error_from_body(404, body);
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
        assert_eq!(err.to_string(), "no agent x (not_found)");
    }

    #[test]
    fn other_error_bodies_become_decode_errors() {
        let err = error_from_body(502, b"<html>Bad Gateway</html>");
        match err {
            ClientError::Decode(message) => {
                assert!(message.contains("502"), "{message}");
                assert!(message.contains("Bad Gateway"), "{message}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn snippets_are_cut() {
        assert_eq!(snippet(b"", 5), "(empty body)");
        assert_eq!(snippet(b"abcdefgh", 3), "abc…");
        assert_eq!(snippet(b"abc", 3), "abc");
    }
}
