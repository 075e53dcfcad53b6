//! The OpenID AuthZEN Authorization API 1.0 (`/access/v1/...`) and its
//! metadata. Requests and answers are AuthZEN's JSON documents, passed as
//! [`serde_json::Value`]; a denial is a successful call answering
//! `{"decision": false, ...}`.

use serde_json::{Value, json};

use crate::{Client, ClientError, Result};

impl Client {
    /// `POST /access/v1/evaluation`: `{subject, action, resource, context?}`
    /// → `{"decision": bool, "context"?: {...}}`.
    pub async fn authzen_evaluation(&self, request: &Value) -> Result<Value> {
        self.post(&["access", "v1", "evaluation"], request).await
    }

    /// `POST /access/v1/evaluations`: defaults at the top level, items in
    /// `evaluations`, `options.evaluations_semantic` → `{"evaluations": [...]}`.
    pub async fn authzen_evaluations(&self, request: &Value) -> Result<Value> {
        self.post(&["access", "v1", "evaluations"], request).await
    }

    /// `POST /access/v1/search/subject` → `{"results": [...], "page": {"next_token"}}`.
    pub async fn authzen_search_subject(&self, request: &Value) -> Result<Value> {
        self.post(&["access", "v1", "search", "subject"], request)
            .await
    }

    /// `POST /access/v1/search/resource`.
    pub async fn authzen_search_resource(&self, request: &Value) -> Result<Value> {
        self.post(&["access", "v1", "search", "resource"], request)
            .await
    }

    /// `POST /access/v1/search/action`.
    pub async fn authzen_search_action(&self, request: &Value) -> Result<Value> {
        self.post(&["access", "v1", "search", "action"], request)
            .await
    }

    /// `GET /.well-known/authzen-configuration`: the decision point's metadata.
    pub async fn authzen_configuration(&self) -> Result<Value> {
        self.get(&[".well-known", "authzen-configuration"]).await
    }

    /// May subject `(type, id)` do `action` on resource `(type, id)`? The
    /// `decision` of a single AuthZEN evaluation.
    pub async fn authzen_allowed(
        &self,
        subject: (&str, &str),
        action: &str,
        resource: (&str, &str),
    ) -> Result<bool> {
        let answer = self
            .authzen_evaluation(&json!({
                "subject": { "type": subject.0, "id": subject.1 },
                "action": { "name": action },
                "resource": { "type": resource.0, "id": resource.1 },
            }))
            .await?;
        answer["decision"].as_bool().ok_or_else(|| {
            ClientError::Decode(format!("an evaluation answer without a decision: {answer}"))
        })
    }
}
