//! Proven delegation: trusted identity providers, the tenant's settings,
//! delegated tokens, and the token exchange (RFC 8693) that issues them.

use steward_types::{
    Delegation, DelegationQuery, DelegationSettings, ErrorCode, ErrorDetail, Issuer, OAuthError,
    Page, PutIssuer, TOKEN_EXCHANGE_GRANT, TokenExchanged,
};

use crate::{Client, ClientError, Method, Result, error_from_body};

/// The subject token type when none is given: a signed JWT (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

impl Client {
    /// `PUT /v1/delegation/issuers/{name}`: trust an identity provider (or
    /// replace the one with this name, for example to rotate its keys).
    pub async fn put_issuer(&self, name: &str, issuer: &PutIssuer) -> Result<Issuer> {
        self.put(&["v1", "delegation", "issuers", name], issuer)
            .await
    }

    /// `GET /v1/delegation/issuers`.
    pub async fn issuers(&self) -> Result<Vec<Issuer>> {
        self.get(&["v1", "delegation", "issuers"]).await
    }

    /// `DELETE /v1/delegation/issuers/{name}`.
    pub async fn delete_issuer(&self, name: &str) -> Result<()> {
        self.delete(&["v1", "delegation", "issuers", name]).await
    }

    /// `GET /v1/delegation/settings`.
    pub async fn delegation_settings(&self) -> Result<DelegationSettings> {
        self.get(&["v1", "delegation", "settings"]).await
    }

    /// `PUT /v1/delegation/settings`.
    pub async fn set_delegation_settings(
        &self,
        settings: &DelegationSettings,
    ) -> Result<DelegationSettings> {
        self.put(&["v1", "delegation", "settings"], settings).await
    }

    /// `GET /v1/delegations`.
    pub async fn delegations(&self, query: &DelegationQuery) -> Result<Page<Delegation>> {
        self.get_query(&["v1", "delegations"], query).await
    }

    /// `POST /v1/delegations/{id}/revoke`: the delegated token stops working
    /// at once.
    pub async fn revoke_delegation(&self, id: &str) -> Result<Delegation> {
        self.post(&["v1", "delegations", id, "revoke"], &serde_json::json!({}))
            .await
    }

    /// `POST /oauth/token`: exchange a person's identity-provider token
    /// (`subject_token`, a signed JWT) for a delegated token (`stwd_...`) that
    /// lets this client's agent act for that person.
    ///
    /// The client must carry the agent's key (`stw_...`, see
    /// [`Client::with_token`]). `subject_token_type` defaults to
    /// [`JWT_TOKEN_TYPE`]. The endpoint answers errors the OAuth way
    /// (`{"error": "invalid_grant", "error_description": "..."}`); they
    /// arrive as [`ClientError::Api`] whose message starts with the OAuth
    /// error and whose `details` hold it as `oauth_error`.
    pub async fn exchange_token(
        &self,
        subject_token: &str,
        subject_token_type: Option<&str>,
    ) -> Result<TokenExchanged> {
        let response = self
            .exchange_request(subject_token, subject_token_type)?
            .send()
            .await?;
        crate::decode_with(response, oauth_error_from_body).await
    }

    /// The token exchange's form, posted with this client's credential.
    fn exchange_request(
        &self,
        subject_token: &str,
        subject_token_type: Option<&str>,
    ) -> Result<reqwest::RequestBuilder> {
        let form = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            (
                "subject_token_type",
                subject_token_type.unwrap_or(JWT_TOKEN_TYPE),
            ),
        ];
        Ok(self.request(Method::POST, &["oauth", "token"])?.form(&form))
    }
}

/// Turn the token endpoint's error answer into [`ClientError::Api`]: an
/// OAuth error body (RFC 6749 §5.2) keeps its `error` and description in the
/// message; anything else is read as Steward's own error body.
fn oauth_error_from_body(status: u16, body: &[u8]) -> ClientError {
    let Ok(oauth) = serde_json::from_slice::<OAuthError>(body) else {
        return error_from_body(status, body);
    };
    let code = if status == 401 || oauth.error == "invalid_client" {
        ErrorCode::Unauthenticated
    } else {
        ErrorCode::InvalidRequest
    };
    let mut detail = ErrorDetail::new(
        code,
        format!(
            "token exchange refused: {}: {}",
            oauth.error, oauth.error_description
        ),
    );
    detail.details = Some(serde_json::json!({ "oauth_error": oauth.error }));
    ClientError::Api {
        status,
        detail: Box::new(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_keep_the_error_and_its_description() {
        let body = br#"{"error":"invalid_grant","error_description":"the token is not a JWT"}"#;
        let err = oauth_error_from_body(400, body);
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
        let text = err.to_string();
        assert!(
            text.contains("invalid_grant") && text.contains("the token is not a JWT"),
            "{text}"
        );
        assert_eq!(
            err.detail().and_then(|d| d.details.clone()),
            Some(serde_json::json!({"oauth_error": "invalid_grant"}))
        );
    }

    #[test]
    fn a_refused_client_is_unauthenticated() {
        let body = br#"{"error":"invalid_client","error_description":"unknown key"}"#;
        let err = oauth_error_from_body(401, body);
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    }

    #[test]
    fn steward_error_bodies_are_still_understood() {
        let body = br#"{"error":{"code":"store_unavailable","message":"down","docs":"d"}}"#;
        let err = oauth_error_from_body(503, body);
        assert_eq!(err.code(), Some(ErrorCode::StoreUnavailable));
    }

    #[test]
    fn the_exchange_is_a_form_with_the_agent_key() {
        let client = Client::new("http://127.0.0.1:1", Some("stw_agent".into()));
        let request = client
            .exchange_request("a.b+c/d=", None)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.url().as_str(), "http://127.0.0.1:1/oauth/token");
        assert_eq!(
            request.headers()[reqwest::header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            request.headers()[reqwest::header::AUTHORIZATION],
            "Bearer stw_agent"
        );
        let body = request.body().and_then(|b| b.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=a.b%2Bc%2Fd%3D\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
        );
        let typed = client
            .exchange_request("t", Some("urn:ietf:params:oauth:token-type:id_token"))
            .unwrap()
            .build()
            .unwrap();
        let body = typed.body().and_then(|b| b.as_bytes()).unwrap();
        assert!(
            std::str::from_utf8(body).unwrap().ends_with(
                "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
            )
        );
    }
}
