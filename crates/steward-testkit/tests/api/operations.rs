//! Health, readiness, metrics, OpenAPI, request ids, and failing closed when
//! the store goes away.

use steward_client::Method;
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(operational_endpoints, store_loss_fails_closed);

async fn operational_endpoints(b: Backend) {
    let s = TestServer::start(b).await;
    let anon = s.anonymous();
    assert_eq!(anon.health().await.unwrap().status, "ok");
    let ready = anon.ready().await.unwrap();
    let expected = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready.store.as_deref(), Some(expected));

    let (status, doc) = anon
        .raw(Method::GET, "/openapi.json", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    for path in [
        "/v1/agents",
        "/v1/agents/{id}",
        "/v1/agents/{id}/{transition}",
        "/v1/agents/{id}/keys",
        "/v1/humans",
        "/v1/teams",
        "/v1/personas",
        "/v1/roles",
        "/v1/audit",
        "/v1/tokens",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["Agent"].is_object());

    let (status, catalogue) = anon
        .raw(Method::GET, "/v1/errors", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        catalogue
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "invalid_transition" && e["status"] == 409)
    );

    // Request ids: echoed when given, generated otherwise, and in error bodies.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v1/agents/ghost", s.server.url()))
        .bearer_auth(steward_testkit::ADMIN_TOKEN)
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error.request_id.as_deref(), Some("req-123"));
    let r = http
        .get(format!("{}/healthz", s.server.url()))
        .send()
        .await
        .unwrap();
    assert!(!r.headers()["x-request-id"].is_empty());
    // Any text is echoed as sent, UTF-8 beyond ASCII and a tab included;
    // bytes that are no text are replaced. Either way echo and error body
    // agree.
    for (sent, kept) in [
        ("h\u{e9}llo".as_bytes(), true),
        (&b"a\tb"[..], true),
        (&b"h\xe9llo"[..], false),
    ] {
        let r = http
            .get(format!("{}/v1/agents/ghost", s.server.url()))
            .bearer_auth(steward_testkit::ADMIN_TOKEN)
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(sent).unwrap(),
            )
            .send()
            .await
            .unwrap();
        let echoed = String::from_utf8(r.headers()["x-request-id"].as_bytes().to_vec()).unwrap();
        assert!(!echoed.is_empty());
        assert_eq!(echoed.as_bytes() == sent, kept, "{echoed}");
        let body: ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.request_id.as_deref(), Some(echoed.as_str()));
    }

    // Methods nobody defined are counted, under one label.
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let r = http
            .request(method, format!("{}/healthz", s.server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    }

    let metrics = http
        .get(format!("{}/metrics", s.server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("steward_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/agents/{id}\""), "{metrics}");
    assert!(
        metrics.contains("steward_errors_total{code=\"not_found\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("steward_http_request_duration_seconds_bucket"));
    assert!(!metrics.contains("INVENTED"), "{metrics}");
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    s.stop().await;
}

async fn store_loss_fails_closed(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    s.server.store().close().await;
    let err = s.anonymous().ready().await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(503), Some(ErrorCode::StoreUnavailable))
    );
    let err = s
        .admin
        .list_agents(&AgentFilter::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(503), Some(ErrorCode::StoreUnavailable))
    );
    s.stop().await;
}
