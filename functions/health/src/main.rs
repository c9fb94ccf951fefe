//! Lambda function `health`: a thin adapter over the shared API logic in `recs::api`.

use std::sync::Arc;

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use recs::api::Endpoint;
use recs::service::{Config, Service};

/// The routes this function answers.
const ROUTES: &[Endpoint] = &[Endpoint::Health];

/// Answers one invocation; never fails (errors are HTTP responses).
async fn handler(svc: &Arc<Service>, event: Request) -> Result<Response<Body>, Error> {
    Ok(recs::lambda::respond(svc, ROUTES, event).await)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    recs::telemetry::init();
    // Loaded once per execution environment (INIT), never per request.
    let svc = Arc::new(Service::start(Config::from_env()?).await);
    let svc = &svc;
    run(service_fn(move |event| handler(svc, event))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use recs::gen_data::{generate, GenConfig};
    use recs::registry::Registry;

    /// A service over a registry written here from synthetic data.
    async fn service() -> (tempfile::TempDir, Arc<Service>) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let config = GenConfig {
            users: 50,
            items: 40,
            ..GenConfig::default()
        };
        registry
            .publish("v0.1", &generate(&config).planted_artifacts())
            .await
            .unwrap();
        let svc = Service::start(Config {
            registry: dir.path().display().to_string(),
            ..Config::default()
        })
        .await;
        (dir, Arc::new(svc))
    }

    /// An API Gateway HTTP API (v2) event from events/, parsed by lambda_http.
    fn event(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        lambda_http::request::from_str(&text).unwrap()
    }

    async fn call(svc: &Arc<Service>, name: &str) -> (u16, serde_json::Value) {
        let resp = handler(svc, event(name)).await.unwrap();
        let status = resp.status().as_u16();
        let body = match resp.body() {
            Body::Text(t) => t.clone(),
            other => panic!("expected a text body, got {other:?}"),
        };
        (status, serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn healthz_event_names_the_version() {
        let (_dir, svc) = service().await;
        let (status, body) = call(&svc, "healthz.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], "v0.1");
    }

    #[tokio::test]
    async fn healthz_is_503_with_the_reason_when_nothing_is_servable() {
        let dir = tempfile::tempdir().unwrap();
        let svc = Arc::new(
            Service::start(Config {
                registry: dir.path().display().to_string(),
                ..Config::default()
            })
            .await,
        );
        let (status, body) = call(&svc, "healthz.json").await;
        assert_eq!(status, 503);
        assert!(
            body["detail"].as_str().unwrap().contains("latest.txt"),
            "{body}"
        );
    }
}
