//! Boots a real Steward server on a temporary store for tests and benchmarks:
//! SQLite in a temporary folder, or the machine's PostgreSQL in a fresh schema
//! (dropped when the server stops), so runs never collide.
//!
//! `STEWARD_TEST_PG_URL` overrides the PostgreSQL server
//! (default `postgres://postgres@127.0.0.1:5432/test`).
#![allow(clippy::missing_panics_doc)]

use sqlx::{Connection, Executor};
use steward_client::Client;
use steward_server::{Config, RunningServer};

pub mod mcp;

/// The admin token every test server starts with.
pub const ADMIN_TOKEN: &str = "stwt_test-admin-token-0123456789";

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a temporary folder.
    Sqlite,
    /// A fresh schema in the machine's PostgreSQL.
    Postgres,
}

/// The PostgreSQL server tests use.
pub fn postgres_base_url() -> String {
    std::env::var("STEWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A temporary store: its URL and what to clean up.
pub struct TempStore {
    /// The database URL to give Steward.
    pub url: String,
    dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TempStore {
    /// Make a fresh, empty store.
    pub async fn new(backend: Backend) -> anyhow::Result<TempStore> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/steward.db", dir.path().display());
                Ok(TempStore {
                    url,
                    dir: Some(dir),
                    schema: None,
                })
            }
            Backend::Postgres => {
                let base = postgres_base_url();
                let schema = format!("steward_test_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(&base).await?;
                conn.execute(format!("CREATE SCHEMA {schema}").as_str())
                    .await?;
                conn.close().await?;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                Ok(TempStore {
                    url,
                    dir: None,
                    schema: Some(schema),
                })
            }
        }
    }

    /// Drop the PostgreSQL schema (SQLite's folder goes with `self`).
    pub async fn remove(mut self) -> anyhow::Result<()> {
        if let Some(schema) = self.schema.take() {
            let mut conn = sqlx::PgConnection::connect(&postgres_base_url()).await?;
            conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await?;
            conn.close().await?;
        }
        drop(self.dir.take());
        Ok(())
    }
}

/// A running server on a temporary store, with an admin client.
pub struct TestServer {
    /// The server.
    pub server: RunningServer,
    /// A client holding the bootstrap admin token.
    pub admin: Client,
    /// Which backend it runs on.
    pub backend: Backend,
    store: TempStore,
}

impl TestServer {
    /// Start a server on a fresh store of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Start with a configuration adjusted by `adjust`.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let store = TempStore::new(backend)
            .await
            .expect("temporary store (is PostgreSQL running?)");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: Some(store.url.clone()),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..Config::default()
        };
        adjust(&mut config);
        let server = steward_server::start(config).await.expect("server starts");
        let admin = Client::new(&server.url(), Some(ADMIN_TOKEN.into()));
        TestServer {
            server,
            admin,
            backend,
            store,
        }
    }

    /// The store's URL (on PostgreSQL, with the test's schema as its
    /// search path), for a test that holds rows locked from outside.
    pub fn store_url(&self) -> &str {
        &self.store.url
    }

    /// A second node: another server on the same store (PostgreSQL), as a
    /// cluster of stateless nodes runs. Stop it before the first.
    pub async fn second_node(&self) -> (RunningServer, Client) {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: Some(self.store.url.clone()),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..Config::default()
        };
        let server = steward_server::start(config)
            .await
            .expect("second node starts");
        let client = Client::new(&server.url(), Some(ADMIN_TOKEN.into()));
        (server, client)
    }

    /// A client with another credential.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.server.url(), Some(token.into()))
    }

    /// A client without any credential.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.server.url(), None)
    }

    /// Make audit appends fail from now on (a trigger refusing inserts into
    /// the log: all of them, or those of entries with `action`) while reads
    /// go on: a store that stops taking writes under a running server.
    /// The trigger is `test_fail_appends`.
    pub async fn fail_audit_appends(&self, action: Option<&str>) -> anyhow::Result<()> {
        const WHY: &str = "the test made audit appends fail";
        let sql = match self.backend {
            Backend::Sqlite => {
                let when = action.map_or(String::new(), |a| format!("WHEN NEW.action = '{a}'"));
                format!(
                    "CREATE TRIGGER test_fail_appends BEFORE INSERT ON audit_log {when} \
                     BEGIN SELECT RAISE(ABORT, '{WHY}'); END"
                )
            }
            Backend::Postgres => {
                let when = action.map_or(String::new(), |a| format!("WHEN (NEW.action = '{a}')"));
                format!(
                    "CREATE FUNCTION test_fail_appends() RETURNS trigger LANGUAGE plpgsql \
                     AS $$ BEGIN RAISE EXCEPTION '{WHY}'; END $$; \
                     CREATE TRIGGER test_fail_appends BEFORE INSERT ON audit_log \
                     FOR EACH ROW {when} EXECUTE FUNCTION test_fail_appends()"
                )
            }
        };
        Ok(self.server.store().execute_raw(&sql).await?)
    }

    /// Stop the server and remove its store.
    pub async fn stop(self) {
        self.server.shutdown().await.expect("graceful shutdown");
        self.store.remove().await.expect("store removed");
    }
}

/// Run each named `async fn(Backend)` test against SQLite and PostgreSQL:
/// `on_both_backends!(registers_agents, ...)` makes `sqlite::registers_agents`
/// and `postgres::registers_agents`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test($crate::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test($crate::Backend::Postgres).await } )*
        }
    };
}

/// A tenant where any agent may `call` an `api` (one resource type, one
/// action, one policy), with the owner `owner@example.com` and one active,
/// low-risk agent named `agent`; and the request of that agent calling
/// `api:billing`. Quota tests and benchmarks start here.
pub mod callers {
    use steward_client::Client;
    use steward_types::{
        CreateHuman, DecisionRequest, PrincipalRef, PutAction, PutPolicy, PutResourceType,
        RegisterAgent, ResourceRef,
    };

    /// Declare the `api` type, the `call` action and the policy, the owner
    /// and the agent.
    pub async fn setup(admin: &Client, agent: &str) -> Result<(), steward_client::ClientError> {
        admin
            .put_resource_type(&PutResourceType {
                name: "api".into(),
                description: "An API".into(),
                attributes: Default::default(),
            })
            .await?;
        admin
            .put_action(&PutAction {
                name: "call".into(),
                description: String::new(),
                resource_types: vec!["api".into()],
                context: Default::default(),
            })
            .await?;
        admin
            .put_policy(&PutPolicy {
                id: "agents-call".into(),
                description: "Any agent may call APIs".into(),
                owner: "platform@example.com".into(),
                text: r#"permit(principal is Agent, action == Action::"call", resource is api);"#
                    .into(),
            })
            .await?;
        admin
            .create_human(&CreateHuman {
                email: "owner@example.com".into(),
                display_name: "Owner".into(),
                ..Default::default()
            })
            .await?;
        admin
            .register_agent(&RegisterAgent {
                name: agent.into(),
                owner: "owner@example.com".into(),
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// `agent` calls `api:billing`.
    pub fn call(agent: &str) -> DecisionRequest {
        DecisionRequest {
            principal: Some(PrincipalRef {
                principal_type: "agent".into(),
                id: agent.into(),
            }),
            action: "call".into(),
            resource: ResourceRef {
                resource_type: "api".into(),
                id: "billing".into(),
                attributes: Default::default(),
            },
            ..Default::default()
        }
    }
}
