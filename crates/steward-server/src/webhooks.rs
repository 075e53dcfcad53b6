//! Outgoing webhooks: events are queued in the store inside the transaction
//! that produced them, then delivered by whichever node claims them first,
//! signed with HMAC-SHA256, retried with exponential backoff, and settled in
//! the audit log (`webhook.delivered` / `webhook.failed`).
//!
//! Bodies are Slack-compatible (`text` is what a Slack incoming webhook
//! shows); the rest of the body carries the event for machines.
//! Signature: `X-Steward-Signature: sha256=HEX(HMAC(secret, TIMESTAMP "." BODY))`
//! with `X-Steward-Timestamp` (Unix seconds), so a receiver can reject replays.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use steward_core::{ChangeContext, Error};
use steward_store::Store;
use steward_store::webhooks::{AttemptResult, DueDelivery};
use tokio::sync::Notify;

use crate::outbound::Outbound;

/// Attempts before a delivery is marked failed.
pub const MAX_ATTEMPTS: i64 = 10;
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claimed delivery is reserved for its node.
const LEASE: Duration = Duration::from_secs(30);

/// The delivery worker's handle: wake it when something was queued.
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    outbound: Outbound,
    wake: Arc<Notify>,
}

pub use steward_store::webhooks::payload;

/// `sha256=HEX` over `TIMESTAMP.BODY`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC accepts keys of any length.
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... capped at 10 minutes.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(600))
}

impl Webhooks {
    /// A worker whose deliveries reach only what `outbound` allows.
    pub fn new(outbound: Outbound) -> Result<Webhooks, String> {
        Ok(Webhooks {
            client: reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .user_agent("steward-webhooks")
                // A subscription is to its URL: a redirect is the receiver's
                // answer (a failed attempt), never a request to another
                // address, which could be one only this server reaches.
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(outbound.clone()))
                .build()
                .map_err(|e| format!("cannot build the webhooks' HTTP client: {e}"))?,
            outbound,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Wake the worker (something was just queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Attempt every delivery due at `now` once; returns how many were attempted.
    pub async fn deliver_due(&self, store: &Store, now: DateTime<Utc>) -> Result<usize, Error> {
        let due = store.due_deliveries(now, 64).await?;
        let mut attempts = tokio::task::JoinSet::new();
        for d in due {
            let lease = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            if !store.claim_delivery(&d.delivery, lease).await? {
                continue;
            }
            let worker = self.clone();
            let store = store.clone();
            attempts.spawn(async move { attempt(&worker, &store, d, now).await });
        }
        let mut n = 0;
        while let Some(done) = attempts.join_next().await {
            n += 1;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "recording a webhook attempt failed");
            }
        }
        Ok(n)
    }

    /// Deliver until shutdown: on wake-up, and every second for retries and
    /// deliveries queued by other nodes.
    pub async fn run(self, store: Store) {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
            if let Err(e) = self.deliver_due(&store, Utc::now()).await {
                tracing::warn!(error = %e, "webhook delivery round failed; will retry");
            }
        }
    }
}

async fn attempt(
    worker: &Webhooks,
    store: &Store,
    due: DueDelivery,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let d = &due.delivery;
    let body = serde_json::to_vec(&d.payload).unwrap_or_default();
    let timestamp = Utc::now().timestamp();
    // A name is checked as it resolves; an address written in the URL
    // (saved before the operator refused its range) here.
    let refused = worker.outbound.check_url(&due.url);
    let sent = match &refused {
        Some(_) => None,
        None => Some(
            worker
                .client
                .post(&due.url)
                .header("content-type", "application/json")
                .header("x-steward-event", &d.event)
                .header("x-steward-delivery", &d.id)
                .header("x-steward-timestamp", timestamp.to_string())
                .header(
                    "x-steward-signature",
                    signature(&due.secret, timestamp, &body),
                )
                .body(body)
                .send()
                .await,
        ),
    };
    let attempts = d.attempts + 1;
    let retry_at = (attempts < MAX_ATTEMPTS)
        .then(|| now + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default());
    let result = match (sent, refused) {
        (None, why) => AttemptResult::Failed {
            status: None,
            error: format!("not sent: {}", why.unwrap_or_default()),
            retry_at,
        },
        (Some(Ok(r)), _) if r.status().is_success() => AttemptResult::Delivered {
            status: r.status().as_u16(),
        },
        (Some(Ok(r)), _) => AttemptResult::Failed {
            status: Some(r.status().as_u16()),
            error: format!("receiver answered {}", r.status()),
            retry_at,
        },
        (Some(Err(e)), _) => AttemptResult::Failed {
            status: None,
            // Without the URL, which may be the credential.
            error: format!("could not reach the receiver: {}", causes(&e.without_url())),
            retry_at,
        },
    };
    let ctx = ChangeContext::system(&due.tenant_id, "webhooks", Utc::now());
    store.finish_delivery(&ctx, &d.id, result).await.map(|_| ())
}

/// An error and its causes, `: `-separated (reqwest's own text is only
/// "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(15), Duration::from_secs(600));
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // HMAC-SHA256("key", "1.{}") computed independently with Python's hmac module.
        let sig = signature("key", 1, b"{}");
        assert_eq!(
            sig,
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(sig, signature("key", 2, b"{}"));
        assert_ne!(sig, signature("other", 1, b"{}"));
    }
}
