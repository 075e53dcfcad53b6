//! The dashboard at `/ui`, driven as a browser would: a form to sign in, a
//! cookie, pages, and forms that carry the session's form value.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use steward_testkit::{ADMIN_TOKEN, Backend, TestServer};
use steward_types::*;

use crate::support::*;

/// A browser without a cookie jar of its own: the test carries the cookies.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<String>,
}

impl Browser {
    pub(crate) fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_string(),
            cookies: Vec::new(),
        }
    }

    fn remember(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_string();
            let name = pair.split('=').next().unwrap().to_string();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            if !v.contains("Max-Age=0") {
                self.cookies.push(pair);
            }
        }
    }

    fn cookie_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.cookies.join("; ")).unwrap()
    }

    pub(crate) async fn get(&mut self, path: &str) -> (StatusCode, HeaderMap, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        self.remember(&headers);
        (status, headers, r.text().await.unwrap())
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let origin: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        self.post_with(path, form, &origin).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        self.remember(&headers);
        (status, headers, r.text().await.unwrap())
    }

    /// Sign in with `token`; the answer's status.
    pub(crate) async fn sign_in(&mut self, token: &str) -> StatusCode {
        let origin = self.base.clone();
        self.login(&[("token", token)], &[("origin", &origin)])
            .await
            .0
    }

    /// The sign-in form's own value, from its page (which sets the cookie
    /// the value goes with).
    async fn login_value(&mut self) -> String {
        let (status, _, page) = self.get("/ui/login").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        csrf(&page)
    }

    /// Post the sign-in form as its page would: `form` and the value the
    /// page carries.
    async fn login(
        &mut self,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let value = self.login_value().await;
        let mut form = form.to_vec();
        form.push(("csrf", &value));
        self.post_with("/ui/login", &form, headers).await
    }

    /// Whether it holds a session cookie.
    fn signed_in(&self) -> bool {
        self.cookies
            .iter()
            .any(|c| c.starts_with("steward_session="))
    }
}

/// The `Set-Cookie` header of the cookie `name`.
fn set_cookie<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {headers:?}"))
}

fn location(headers: &HeaderMap) -> &str {
    headers
        .get(reqwest::header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
}

/// The form value a page carries for its session.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form on the page")
        + 19;
    page[at..].split('"').next().unwrap().to_string()
}

async fn the_dashboard(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let admin = &srv.admin;
    let base = srv.server.url();
    let origin = base.trim_end_matches('/').to_string();

    // Signed out, every page leads to the sign-in form, and back.
    let mut anon = Browser::new(&base);
    for path in ["/ui", "/ui/agents?state=active", "/ui/approvals/apr_x"] {
        let (status, headers, _) = anon.get(path).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        let to = location(&headers);
        assert!(to.starts_with("/ui/login?next=%2Fui"), "{to}");
    }
    let (status, headers, page) = anon
        .get("/ui/login?next=%2Fui%2Fagents%3Fstate%3Dactive")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("name=\"token\""));
    assert!(
        page.contains("name=\"next\" value=\"/ui/agents?state=active\""),
        "{page}"
    );
    let (status, headers_back, _) = Browser::new(&base)
        .login(
            &[("token", ADMIN_TOKEN), ("next", "/ui/agents?state=active")],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers_back), "/ui/agents?state=active");
    let (_, headers_back, _) = Browser::new(&base)
        .login(
            &[("token", ADMIN_TOKEN), ("next", "//evil.example/ui")],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(location(&headers_back), "/ui", "never off the dashboard");
    // A form that cannot be read gets the dashboard's error page.
    let (status, headers_back, page) = Browser::new(&base)
        .login(&[("next", "/ui")], &[("origin", &origin)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        headers_back["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{headers_back:?}"
    );
    assert!(page.contains("the form could not be read"), "{page}");
    assert!(page.contains("token"), "names the missing field: {page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");

    // A wrong token, a malformed one and an agent key sign nobody in.
    human(admin, "olivia@example.com").await;
    let bot = low_risk_agent(admin, "triage-bot", "olivia@example.com").await;
    let key = admin
        .create_key(&bot.id, &CreateKey::default())
        .await
        .unwrap();
    for (token, expected) in [
        ("stwt_not-a-real-token", StatusCode::UNAUTHORIZED),
        ("a token; with=stuff", StatusCode::UNAUTHORIZED),
        (key.secret.as_str(), StatusCode::FORBIDDEN),
    ] {
        let mut b = Browser::new(&base);
        assert_eq!(b.sign_in(token).await, expected, "{token}");
        assert!(!b.signed_in(), "no session for {token}");
    }
    // Another site's form cannot sign a browser in.
    let mut b = Browser::new(&base);
    let (status, _, _) = b
        .login(
            &[("token", ADMIN_TOKEN)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!b.signed_in());

    // The inventory as the admin sees it; text is escaped, never markup.
    admin
        .update_agent(
            "triage-bot",
            &UpdateAgent {
                purpose: Some("sorts <b>tickets</b> & \"bugs\"".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin
        .register_agent(&RegisterAgent {
            name: "warehouse-loader".into(),
            owner: "olivia@example.com".into(),
            purpose: "loads the warehouse".into(),
            classifications: Some(vec!["confidential".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let approval = pending_approval(admin, "warehouse-loader", "registration").await;
    let mut ops = Browser::new(&base);
    let (status, headers, _) = ops
        .login(&[("token", ADMIN_TOKEN)], &[("origin", &origin)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = set_cookie(&headers, "steward_session");
    for part in [
        "steward_session=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/ui",
        "Max-Age=",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(
        !set.contains(ADMIN_TOKEN),
        "the browser keeps no secret: {set}"
    );
    // Behind a TLS proxy (its own name in X-Forwarded-Host) the cookie is Secure.
    let (status, headers, _) = Browser::new(&base)
        .login(
            &[("token", ADMIN_TOKEN)],
            &[
                ("origin", "https://steward.example"),
                ("x-forwarded-host", "steward.example"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&headers, "steward_session").contains("; Secure"));
    let (status, headers, page) = ops.get("/ui").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(page.contains(&approval.id), "pending approval listed");
    assert!(page.contains("pending_approval"), "agent states counted");
    // A session is the cluster's, not one node's: another node honours it
    // (the seal's pepper is in the store).
    if srv.backend == Backend::Postgres {
        let (node, _) = srv.second_node().await;
        let mut elsewhere = Browser::new(&node.url());
        elsewhere.cookies = ops.cookies.clone();
        let (status, _, page) = elsewhere.get("/ui/agents").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("triage-bot"));
        node.shutdown().await.unwrap();
    }
    let (_, _, page) = ops.get("/ui/agents").await;
    assert!(page.contains("triage-bot") && page.contains("warehouse-loader"));
    assert!(
        page.contains("sorts &#60;b&#62;tickets&#60;/b&#62; &#38; &#34;bugs&#34;"),
        "{page}"
    );
    assert!(!page.contains("<b>tickets</b>"));
    let (_, _, page) = ops.get("/ui/agents?state=active").await;
    assert!(page.contains("triage-bot") && !page.contains("warehouse-loader"));
    let (status, _, page) = ops.get("/ui/agents?state=sleeping").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bad filter is a clear error"
    );
    assert!(page.contains("sleeping"));
    let (status, _, page) = ops.get(&format!("/ui/agents/{}", bot.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&key.key.prefix),
        "the agent's key, by prefix only"
    );
    assert!(!page.contains(&key.secret), "never the secret");
    assert!(page.contains("olivia@example.com"), "owner by e-mail");
    let (status, _, _) = ops.get("/ui/agents/agt_missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/ui/policies", "/ui/quotas", "/ui/mcp", "/ui/approvals"] {
        let (status, _, page) = ops.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
    }
    let (_, _, page) = ops.get("/ui/audit?action=agent.*").await;
    assert!(page.contains("agent.register"), "{page}");
    // The log page shows the latest hundred entries, newest first.
    for i in 0..100 {
        admin
            .create_team(&CreateTeam {
                name: format!("team-{i}"),
                description: String::new(),
            })
            .await
            .unwrap();
    }
    let log = all_audit(admin).await;
    let (_, _, page) = ops.get("/ui/audit").await;
    let rows = page.matches("<tr><td>").count();
    assert_eq!(rows, 100, "{page}");
    let newest = page.find(&format!("<tr><td>{}</td>", log.last().unwrap().seq));
    let older = page.find(&format!("<tr><td>{}</td>", log[log.len() - 2].seq));
    assert!(newest.is_some() && newest < older, "newest first");

    // A reviewer approves through the page. The form needs the session's
    // value and this site's origin; without them nothing changes.
    let group = approval.current_group().unwrap().to_string();
    let reviewer_email = format!("{group}-reviewer@example.com");
    person(admin, &reviewer_email, &[&group]).await;
    let reviewer_token = token_for(admin, "reviewer ui", TokenRole::Auditor, &reviewer_email).await;
    let mut rev = Browser::new(&base);
    assert_eq!(
        rev.sign_in(&reviewer_token.secret).await,
        StatusCode::SEE_OTHER
    );
    // The overview puts what waits for them first; the bootstrap token is
    // nobody's, so nothing waits for it.
    let (_, _, page) = rev.get("/ui").await;
    let yours = page
        .find("Waiting for you")
        .expect("a section for the reviewer");
    assert!(page[yours..].contains(&approval.id), "{page}");
    let (_, _, page) = ops.get("/ui").await;
    assert!(!page.contains("Waiting for you"));
    let (status, _, page) = rev.get(&format!("/ui/approvals/{}", approval.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("warehouse-loader") && page.contains("Approve"));
    let value = csrf(&page);
    let approve = format!("/ui/approvals/{}/approve", approval.id);
    for (form, from) in [
        (
            vec![("csrf", "forged"), ("comment", "ok")],
            Some(origin.as_str()),
        ),
        (vec![("comment", "ok")], Some(origin.as_str())),
        (
            vec![("csrf", value.as_str()), ("comment", "ok")],
            Some("https://evil.example"),
        ),
    ] {
        let (status, _, _) = rev.post(&approve, &form, from).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{status}"
        );
        assert_eq!(
            admin.get_approval(&approval.id).await.unwrap().status,
            ApprovalStatus::Pending
        );
    }
    // One user's form value does not work in another's session.
    let (_, _, admin_page) = ops.get(&format!("/ui/approvals/{}", approval.id)).await;
    assert_ne!(csrf(&admin_page), value);
    let (status, _, _) = rev
        .post(&approve, &[("csrf", &csrf(&admin_page))], Some(&origin))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A session moved to another tenant by hand breaks its seal.
    let mut moved = Browser::new(&base);
    moved.cookies = rev
        .cookies
        .iter()
        .map(|c| c.replacen(".default.", ".acme.", 1))
        .collect();
    assert_ne!(moved.cookies, rev.cookies);
    assert_eq!(moved.get("/ui").await.0, StatusCode::SEE_OTHER);
    let (status, headers, _) = rev
        .post(
            &approve,
            &[("csrf", &value), ("comment", "looks right")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), format!("/ui/approvals/{}", approval.id));
    let after = admin.get_approval(&approval.id).await.unwrap();
    assert_eq!(after.steps[0].status, "approved");
    assert_eq!(
        after.steps[0].decided_by_email.as_deref(),
        Some(reviewer_email.as_str())
    );
    assert_eq!(after.steps[0].comment.as_deref(), Some("looks right"));
    // Deciding again is the API's own refusal, shown as a page.
    let (status, _, page) = rev.post(&approve, &[("csrf", &value)], Some(&origin)).await;
    assert!(status.is_client_error(), "{status}");
    assert!(page.contains("<h1>"), "an error page, not JSON");

    // An admin suspends and resumes an agent from its page; a suspension
    // needs a reason; an auditor sees no buttons and may not post them.
    let agent_page = format!("/ui/agents/{}", bot.id);
    let (_, _, page) = ops.get(&agent_page).await;
    assert!(page.contains("/suspend") && !page.contains("/resume"));
    let form = csrf(&page);
    let suspend = format!("{agent_page}/suspend");
    let (status, _, _) = ops
        .post(&suspend, &[("csrf", &form), ("reason", " ")], Some(&origin))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        admin.get_agent(&bot.id).await.unwrap().state,
        AgentState::Active
    );
    let (_, _, page) = rev.get(&agent_page).await;
    assert!(!page.contains("/suspend"), "no buttons for an auditor");
    let (status, _, _) = rev
        .post(
            &suspend,
            &[("csrf", &csrf(&page)), ("reason", "x")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = ops
        .post(
            &format!("{agent_page}/activate"),
            &[("csrf", &form)],
            Some(&origin),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "approvals activate, not this page"
    );
    let (status, headers, _) = ops
        .post(
            &suspend,
            &[("csrf", &form), ("reason", "odd traffic")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), agent_page);
    let suspended = admin.get_agent(&bot.id).await.unwrap();
    assert_eq!(suspended.state, AgentState::Suspended);
    assert_eq!(suspended.state_reason.as_deref(), Some("odd traffic"));
    let (_, _, page) = ops.get(&agent_page).await;
    assert!(page.contains("odd traffic") && page.contains("/resume"));
    // (A browser that sends no Origin is held to the form value alone.)
    let (status, _, _) = ops
        .post(&format!("{agent_page}/resume"), &[("csrf", &form)], None)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        admin.get_agent(&bot.id).await.unwrap().state,
        AgentState::Active
    );
    // Decommissioning asks for the agent's name.
    let scratch = low_risk_agent(admin, "scratch", "olivia@example.com").await;
    let scratch_page = format!("/ui/agents/{}", scratch.id);
    let decommission = format!("{scratch_page}/decommission");
    let (_, _, page) = ops.get(&scratch_page).await;
    assert!(page.contains("name=\"confirm\""));
    let (status, _, page) = ops
        .post(
            &decommission,
            &[("csrf", &form), ("confirm", "scratc")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("type the agent"), "{page}");
    assert_eq!(
        admin.get_agent(&scratch.id).await.unwrap().state,
        AgentState::Active
    );
    let (status, _, _) = ops
        .post(
            &decommission,
            &[("csrf", &form), ("confirm", "scratch")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        admin.get_agent(&scratch.id).await.unwrap().state,
        AgentState::Decommissioned
    );

    // Another tenant's token sees only its tenant.
    admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let acme = admin
        .create_token(&CreateToken {
            name: "acme ops".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    let mut other = Browser::new(&base);
    assert_eq!(other.sign_in(&acme.secret).await, StatusCode::SEE_OTHER);
    let (_, _, page) = other.get("/ui/agents").await;
    assert!(!page.contains("triage-bot"), "{page}");
    let (status, _, _) = other.get(&format!("/ui/agents/{}", bot.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, page) = other.get("/ui").await;
    let (status, _, _) = other
        .post(
            &format!("/ui/agents/{}/suspend", bot.id),
            &[("csrf", &csrf(&page)), ("reason", "not mine")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's agent");
    assert_eq!(
        admin.get_agent(&bot.id).await.unwrap().state,
        AgentState::Active
    );
    // It cannot switch tenant; the platform admin can.
    let (_, _, page) = other.get("/ui").await;
    let (status, _, _) = other
        .post(
            "/ui/tenant",
            &[("csrf", &csrf(&page)), ("tenant", "default")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, page) = ops.get("/ui").await;
    // A field that takes any tenant id, suggesting the known ones.
    assert!(
        page.contains(r#"list="tenant-ids""#) && page.contains(r#"<option value="acme">"#),
        "{page}"
    );
    let (status, _, _) = ops
        .post(
            "/ui/tenant",
            &[("csrf", &csrf(&page)), ("tenant", "acme")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, page) = ops.get("/ui/agents").await;
    assert!(!page.contains("triage-bot"), "now looking at acme");
    let (status, _, _) = ops
        .post(
            "/ui/tenant",
            &[("csrf", &csrf(&page)), ("tenant", "nowhere")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Signing out ends the session; a revoked token ends it too.
    let (_, _, page) = ops.get("/ui").await;
    let (status, headers, _) = ops
        .post("/ui/logout", &[("csrf", &csrf(&page))], Some(&origin))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/ui/login");
    assert!(!ops.signed_in(), "{:?}", ops.cookies);
    assert_eq!(ops.get("/ui").await.0, StatusCode::SEE_OTHER);
    srv.client(&acme.secret)
        .revoke_token(&acme.token.id)
        .await
        .unwrap();
    let (status, headers, _) = other.get("/ui").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/ui/login?next=%2Fui");
    srv.stop().await;
}

#[tokio::test]
async fn the_dashboard_on_sqlite() {
    the_dashboard(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_dashboard_on_postgres() {
    the_dashboard(Backend::Postgres).await;
}

/// A token the operator chose, in any characters the API takes, signs in.
#[tokio::test]
async fn a_configured_token_of_any_characters_signs_in() {
    let token = "stwt_plus+slash/equals=0123456789";
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.admin_token = Some(token.into())).await;
    let mut b = Browser::new(&srv.server.url());
    assert_eq!(b.sign_in(token).await, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/ui").await.0, StatusCode::OK);
    srv.stop().await;
}

/// Signing out ends the session where it is kept, in the store: a copy of
/// its cookie taken before (say, by someone who stole it) is refused
/// afterwards, whichever tenant it was looking at, and on every node.
async fn a_signed_out_session_stays_out(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let base = srv.server.url();
    let origin = base.trim_end_matches('/').to_string();
    srv.admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let mut ops = Browser::new(&base);
    assert_eq!(ops.sign_in(ADMIN_TOKEN).await, StatusCode::SEE_OTHER);
    let (status, _, page) = ops.get("/ui").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first_tenant = ops.cookies.clone();
    let (status, _, _) = ops
        .post(
            "/ui/tenant",
            &[("csrf", &csrf(&page)), ("tenant", "acme")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stolen = ops.cookies.clone();
    assert_ne!(stolen, first_tenant);
    for copy in [&first_tenant, &stolen] {
        let mut thief = Browser::new(&base);
        thief.cookies = copy.clone();
        assert_eq!(thief.get("/ui/agents").await.0, StatusCode::OK);
    }

    // Signing out is a form, with the session's value: a link, another
    // site's form or a forged value end nothing.
    let (_, _, page) = ops.get("/ui").await;
    let value = csrf(&page);
    assert_eq!(
        ops.get("/ui/logout").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    for (form, from) in [
        (vec![("csrf", "forged")], Some(origin.as_str())),
        (vec![("csrf", value.as_str())], Some("https://evil.example")),
    ] {
        let (status, _, _) = ops.post("/ui/logout", &form, from).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(ops.get("/ui").await.0, StatusCode::OK, "still signed in");
    }
    let (status, headers, _) = ops
        .post("/ui/logout", &[("csrf", &value)], Some(&origin))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/ui/login");
    assert!(!ops.signed_in());

    // The copies are refused: pages send them to sign in, forms do nothing.
    for copy in [&first_tenant, &stolen] {
        let mut thief = Browser::new(&base);
        thief.cookies = copy.clone();
        let (status, headers, _) = thief.get("/ui/agents").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{copy:?}");
        assert_eq!(location(&headers), "/ui/login?next=%2Fui%2Fagents");
        let (status, headers, _) = thief
            .post(
                "/ui/tenant",
                &[("csrf", &value), ("tenant", "default")],
                Some(&origin),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location(&headers), "/ui/login");
        assert!(
            !headers.contains_key(reqwest::header::SET_COOKIE),
            "no new session for an ended one: {headers:?}"
        );
    }
    // Signing in again starts a new session.
    assert_eq!(ops.sign_in(ADMIN_TOKEN).await, StatusCode::SEE_OTHER);
    assert_eq!(ops.get("/ui").await.0, StatusCode::OK);

    // A person who leaves is signed out with their tokens.
    let leaver_id = human(&srv.admin, "leaver@example.com").await.id;
    let token = token_for(
        &srv.admin,
        "leaver ui",
        TokenRole::Auditor,
        "leaver@example.com",
    )
    .await;
    let mut leaver = Browser::new(&base);
    assert_eq!(leaver.sign_in(&token.secret).await, StatusCode::SEE_OTHER);
    assert_eq!(leaver.get("/ui").await.0, StatusCode::OK);
    srv.admin
        .deactivate_human(&leaver_id, &TransitionRequest::default())
        .await
        .unwrap();
    assert_eq!(leaver.get("/ui").await.0, StatusCode::SEE_OTHER);

    // Nodes sharing the store share sign-outs, both ways.
    if srv.backend == Backend::Postgres {
        let (node, _) = srv.second_node().await;
        let here_then_there = ops.cookies.clone();
        let mut elsewhere = Browser::new(&node.url());
        elsewhere.cookies = here_then_there.clone();
        assert_eq!(elsewhere.get("/ui").await.0, StatusCode::OK);
        let (_, _, page) = ops.get("/ui").await;
        let (status, _, _) = ops
            .post("/ui/logout", &[("csrf", &csrf(&page))], Some(&origin))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(elsewhere.get("/ui").await.0, StatusCode::SEE_OTHER);

        let node_origin = node.url().trim_end_matches('/').to_string();
        let mut there = Browser::new(&node.url());
        assert_eq!(there.sign_in(ADMIN_TOKEN).await, StatusCode::SEE_OTHER);
        let mut here = Browser::new(&base);
        here.cookies = there.cookies.clone();
        assert_eq!(here.get("/ui").await.0, StatusCode::OK);
        let (_, _, page) = there.get("/ui").await;
        let (status, _, _) = there
            .post("/ui/logout", &[("csrf", &csrf(&page))], Some(&node_origin))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(here.get("/ui").await.0, StatusCode::SEE_OTHER);
        node.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_signed_out_session_stays_out_on_sqlite() {
    a_signed_out_session_stays_out(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_signed_out_session_stays_out_on_postgres() {
    a_signed_out_session_stays_out(Backend::Postgres).await;
}

/// The sign-in form carries a value of its own, which goes with a cookie
/// its page sets: another site's page cannot sign a browser in (to the
/// other site's session, say) without it. A sign-in without it, or with a
/// wrong one, is refused with a reason and starts no session.
#[tokio::test]
async fn signing_in_needs_the_forms_own_value() {
    let srv = TestServer::start(Backend::Sqlite).await;
    let base = srv.server.url();
    let origin = base.trim_end_matches('/').to_string();
    let refused = |status: StatusCode, page: &str, b: &Browser, case: &str| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {page}");
        assert!(
            page.contains("this sign-in form has expired or did not come from this dashboard"),
            "{case}: {page}"
        );
        assert!(!b.signed_in(), "{case}: {:?}", b.cookies);
    };

    // A sign-in posted from anywhere but the form's page (another site's
    // page, say, which sends no Origin) is refused.
    let mut elsewhere = Browser::new(&base);
    let (status, _, page) = elsewhere
        .post("/ui/login", &[("token", ADMIN_TOKEN)], None)
        .await;
    refused(status, &page, &elsewhere, "no form, no value");

    // The form's page sets the cookie its value goes with, for the form only.
    let mut b = Browser::new(&base);
    let (status, headers, page) = b.get("/ui/login").await;
    assert_eq!(status, StatusCode::OK);
    let value = csrf(&page);
    let set = set_cookie(&headers, "steward_login");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui/login", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(
        !set.contains(&value),
        "the page's value is not the cookie's"
    );
    let (_, _, again) = b.get("/ui/login").await;
    assert_eq!(csrf(&again), value, "another look at the form keeps it");

    // Another browser's form, and its value.
    let mut attacker = Browser::new(&base);
    let theirs = attacker.login_value().await;
    assert_ne!(theirs, value);
    // Without a value, with a wrong one, with another browser's, or with
    // the value but not its cookie.
    for (case, form) in [
        ("no value", vec![("token", ADMIN_TOKEN)]),
        ("empty", vec![("token", ADMIN_TOKEN), ("csrf", "")]),
        ("forged", vec![("token", ADMIN_TOKEN), ("csrf", "forged")]),
        ("another's", vec![("token", ADMIN_TOKEN), ("csrf", &theirs)]),
    ] {
        let mut victim = Browser::new(&base);
        victim.cookies = b.cookies.clone();
        let (status, _, page) = victim.post("/ui/login", &form, Some(&origin)).await;
        refused(status, &page, &victim, case);
    }
    let mut cookieless = Browser::new(&base);
    let (status, _, page) = cookieless
        .post(
            "/ui/login",
            &[("token", ADMIN_TOKEN), ("csrf", &value)],
            Some(&origin),
        )
        .await;
    refused(status, &page, &cookieless, "no cookie");
    // The attacker's own cookie, planted beside the victim's (before or
    // after it), does not help: two cookies of a name count as none.
    for (case, first, second) in [
        ("a second cookie, after", &b, &attacker),
        ("a second cookie, before", &attacker, &b),
    ] {
        let mut planted = Browser::new(&base);
        planted.cookies = first.cookies.clone();
        planted.cookies.extend(second.cookies.clone());
        let (status, _, page) = planted
            .post(
                "/ui/login",
                &[("token", ADMIN_TOKEN), ("csrf", &theirs)],
                Some(&origin),
            )
            .await;
        refused(status, &page, &planted, case);
    }

    // A refusal's page carries a good value: signing in from it works, and
    // the form's cookie goes with the sign-in.
    let (status, _, page) = cookieless
        .post("/ui/login", &[("token", ADMIN_TOKEN)], Some(&origin))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = cookieless
        .post(
            "/ui/login",
            &[("token", ADMIN_TOKEN), ("csrf", &csrf(&page))],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&headers, "steward_login").contains("Max-Age=0"));
    assert!(cookieless.signed_in());
    assert_eq!(cookieless.get("/ui").await.0, StatusCode::OK);

    // The normal way: the form's page, then the form.
    let (status, headers, _) = b
        .post(
            "/ui/login",
            &[("token", ADMIN_TOKEN), ("csrf", &value)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/ui");
    assert_eq!(b.get("/ui").await.0, StatusCode::OK);
    // A wrong token keeps the form's value, so the next try works.
    let mut typo = Browser::new(&base);
    let value = typo.login_value().await;
    let (status, _, page) = typo
        .post(
            "/ui/login",
            &[("token", "stwt_typo"), ("csrf", &value)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(csrf(&page), value);
    let (status, _, _) = typo
        .post(
            "/ui/login",
            &[("token", ADMIN_TOKEN), ("csrf", &value)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    srv.stop().await;
}
