//! Webhooks: subscriptions, signed Slack-compatible deliveries, retries with
//! backoff, and settlement in the audit log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use steward_client::Client;
use steward_testkit::{Backend, TestServer};
use steward_types::*;

use crate::support::*;

/// A local receiver: records every request and answers `statuses` in turn
/// (the last one forever).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

pub async fn receiver(statuses: Vec<u16>) -> Receiver {
    let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let statuses = statuses.clone();
            async move {
                let mut seen = log.lock().unwrap();
                let n = seen.len().min(statuses.len() - 1);
                seen.push((headers, body));
                StatusCode::from_u16(statuses[n]).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, seen }
}

/// Subscribe `r` to `events` with a known secret.
pub async fn subscribe(admin: &Client, r: &Receiver, events: &[&str]) -> String {
    let secret = "a-very-secret-signing-key";
    admin
        .create_webhook(&CreateWebhook {
            name: "hook".into(),
            url: r.url.clone(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: Some(secret.into()),
        })
        .await
        .unwrap();
    secret.into()
}

/// Check the signature of a received request independently of the server's code.
pub fn assert_signed(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let ts = headers["x-steward-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-steward-signature"].to_str().unwrap(),
        format!("sha256={want}")
    );
}

/// Wait (bounded) until the subscription has a delivery in `status`.
pub async fn until_delivery(admin: &Client, status: DeliveryStatus) -> WebhookDelivery {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = admin
            .list_deliveries(
                "hook",
                &DeliveryQuery {
                    status: Some(status),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if let Some(d) = page.items.into_iter().next() {
            return d;
        }
        assert!(Instant::now() < deadline, "no delivery reached {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `test.ping` queued an hour ahead, so that the server's own worker (on
/// the real clock) leaves it to the test's injected clock; that time.
async fn ping_ahead(store: &steward_store::Store) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = steward_server::webhooks::payload(
        "test.ping",
        "default",
        "ping",
        serde_json::json!({}),
        now,
    );
    store
        .enqueue_webhooks("default", "test.ping", &body, now)
        .await
        .unwrap();
    now
}

async fn delivers_signed_and_retries(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let r = receiver(vec![500, 200]).await;
    let secret = subscribe(&ts.admin, &r, &["test.*"]).await;
    let store = ts.server.store();
    let now = chrono::Utc::now();
    let body = steward_server::webhooks::payload(
        "test.ping",
        "default",
        "ping",
        serde_json::json!({"n": 1}),
        now,
    );
    assert_eq!(
        store
            .enqueue_webhooks("default", "test.ping", &body, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .enqueue_webhooks("default", "other.event", &body, now)
            .await
            .unwrap(),
        0,
        "not subscribed"
    );

    let d = until_delivery(&ts.admin, DeliveryStatus::Delivered).await;
    assert_eq!(d.attempts, 2, "the first attempt got a 500 and was retried");
    assert_eq!(d.response_status, Some(200));
    let seen = r.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (headers, body) in &seen {
        assert_signed(&secret, headers, body);
        assert_eq!(headers["x-steward-event"], "test.ping");
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["text"], "ping", "Slack-compatible body");
        assert_eq!(json["data"]["n"], 1);
    }
    let audit = all_audit(&ts.admin).await;
    let settled = audit
        .iter()
        .find(|e| e.action == "webhook.delivered")
        .expect("delivery audited");
    assert_eq!(settled.after.as_ref().unwrap()["attempts"], 2);
    ts.stop().await;
}

async fn gives_up_after_max_attempts(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let r = receiver(vec![503]).await;
    subscribe(&ts.admin, &r, &[]).await;
    let store = ts.server.store();
    let mut now = ping_ahead(store).await;
    let worker = steward_server::webhooks::Webhooks::new(Default::default()).unwrap();
    let mut rounds = 0;
    while worker.deliver_due(store, now).await.unwrap() > 0 {
        rounds += 1;
        now += chrono::Duration::hours(1);
    }
    assert_eq!(rounds, steward_server::webhooks::MAX_ATTEMPTS);
    let d = until_delivery(&ts.admin, DeliveryStatus::Failed).await;
    assert_eq!(d.attempts, steward_server::webhooks::MAX_ATTEMPTS);
    assert_eq!(d.response_status, Some(503));
    assert_eq!(
        r.seen.lock().unwrap().len() as i64,
        steward_server::webhooks::MAX_ATTEMPTS
    );
    assert!(
        all_audit(&ts.admin)
            .await
            .iter()
            .any(|e| e.action == "webhook.failed")
    );
    ts.stop().await;
}

async fn rejects_bad_subscriptions(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let before = snapshot(&ts.admin).await;
    for bad in [
        CreateWebhook {
            name: "x".into(),
            url: "ftp://h/x".into(),
            ..Default::default()
        },
        CreateWebhook {
            name: "x".into(),
            url: "http://h/x".into(),
            secret: Some("short".into()),
            ..Default::default()
        },
        CreateWebhook {
            name: "x".into(),
            url: "http://h/x".into(),
            events: vec!["a*b".into()],
            ..Default::default()
        },
        CreateWebhook {
            name: "".into(),
            url: "http://h/x".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(
            code(ts.admin.create_webhook(&bad).await),
            ErrorCode::InvalidRequest,
            "{bad:?}"
        );
    }
    assert_eq!(snapshot(&ts.admin).await, before, "nothing changed");
    assert_eq!(
        code(ts.admin.delete_webhook("nope").await),
        ErrorCode::NotFound
    );
    let created = ts
        .admin
        .create_webhook(&CreateWebhook {
            name: "ok".into(),
            url: "https://hooks.example.com/services/T000/B000/XXXXSECRETXXXX".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(created.secret.starts_with("whsec_"));
    let listed = ts.admin.list_webhooks(&page500()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        listed.items[0].url.ends_with("XXXXSECRETXXXX"),
        "admins see it"
    );
    // The URL is often the credential: the log and readers who are not
    // admins see its host only.
    let log = serde_json::to_string(&all_audit(&ts.admin).await).unwrap();
    assert!(!log.contains("SECRET"), "the webhook URL is in the log");
    human(&ts.admin, "audrey@example.com").await;
    let auditor = token_for(&ts.admin, "audit", TokenRole::Auditor, "audrey@example.com").await;
    let seen = ts
        .client(&auditor.secret)
        .list_webhooks(&page500())
        .await
        .unwrap();
    assert_eq!(seen.items[0].url, "https://hooks.example.com/***");
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(&created.secret),
        "secret never shown again"
    );
    ts.stop().await;
}

/// A receiver's redirect is its answer, a failed attempt: the delivery does
/// not follow it to another address.
#[tokio::test]
async fn redirects_are_not_followed() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let elsewhere = receiver(vec![200]).await;
    let to = elsewhere.url.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let to = to.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirecting = Receiver {
        url: format!("http://{}/hook", listener.local_addr().unwrap()),
        seen: Arc::default(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    subscribe(&ts.admin, &redirecting, &[]).await;
    let store = ts.server.store();
    let now = ping_ahead(store).await;
    let worker = steward_server::webhooks::Webhooks::new(Default::default()).unwrap();
    assert_eq!(worker.deliver_due(store, now).await.unwrap(), 1);
    let d = until_delivery(&ts.admin, DeliveryStatus::Pending).await;
    assert_eq!(d.attempts, 1);
    assert_eq!(d.response_status, Some(307));
    assert!(elsewhere.seen.lock().unwrap().is_empty());
    ts.stop().await;
}

/// A webhook cannot make this server fetch a cloud's metadata service, or
/// any range the operator refused: an address in the URL is refused when
/// subscribing, and a name is checked as it resolves, at every delivery.
#[tokio::test]
async fn refused_addresses_are_never_reached() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let before = snapshot(&ts.admin).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:8080/",
    ] {
        let refused = ts
            .admin
            .create_webhook(&CreateWebhook {
                name: "meta".into(),
                url: url.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let text = format!("{refused:?}");
        assert!(text.contains("outbound"), "{url}: {text}");
        assert_eq!(code::<()>(Err(refused)), ErrorCode::InvalidRequest, "{url}");
    }
    assert_eq!(snapshot(&ts.admin).await, before, "nothing changed");

    // An operator who refuses loopback: a receiver reached by name is not
    // sent anything, and the delivery says why.
    let r = receiver(vec![200]).await;
    let by_name = Receiver {
        url: r.url.replace("127.0.0.1", "localhost"),
        seen: r.seen.clone(),
    };
    subscribe(&ts.admin, &by_name, &[]).await;
    let store = ts.server.store();
    let now = ping_ahead(store).await;
    let rules =
        steward_server::outbound::Outbound::new(&steward_server::outbound::OutboundConfig {
            deny: vec!["127.0.0.0/8".into(), "::1".into()],
            allow: vec![],
        })
        .unwrap();
    let worker = steward_server::webhooks::Webhooks::new(rules).unwrap();
    assert_eq!(worker.deliver_due(store, now).await.unwrap(), 1);
    let d = until_delivery(&ts.admin, DeliveryStatus::Pending).await;
    assert_eq!(d.attempts, 1);
    assert!(
        d.last_error.as_deref().unwrap_or("").contains("refused"),
        "{:?}",
        d.last_error
    );
    assert!(
        r.seen.lock().unwrap().is_empty(),
        "the receiver was reached"
    );
    // The default rules reach it.
    let worker = steward_server::webhooks::Webhooks::new(Default::default()).unwrap();
    assert_eq!(
        worker
            .deliver_due(store, now + chrono::Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(r.seen.lock().unwrap().len(), 1);
    ts.stop().await;
}

steward_testkit::on_both_backends!(
    delivers_signed_and_retries,
    gives_up_after_max_attempts,
    rejects_bad_subscriptions
);
