//! Lambda function `switch`: model switching and rollout (`GET|POST /switch`,
//! `GET /rollout/status`, `POST /rollout/update`), a thin adapter over `recs::api`.
//! API Gateway's AWS_IAM authorizer guards these routes; `RECS_ADMIN_TOKEN`, when set,
//! adds a bearer-token check.

use std::sync::Arc;

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use recs::api::Endpoint;
use recs::service::{Config, Service};

/// The routes this function answers.
const ROUTES: &[Endpoint] = &Endpoint::ADMIN;

/// Answers one invocation; never fails (errors are HTTP responses).
async fn handler(svc: &Arc<Service>, event: Request) -> Result<Response<Body>, Error> {
    Ok(recs::lambda::respond(svc, ROUTES, event).await)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    recs::telemetry::init();
    let svc = Arc::new(Service::start(Config::from_env()?).await);
    let svc = &svc;
    run(service_fn(move |event| handler(svc, event))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use recs::gen_data::{generate, GenConfig};
    use recs::registry::Registry;

    fn event(name: &str) -> Request {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    async fn call(svc: &Arc<Service>, name: &str) -> (u16, serde_json::Value) {
        let resp = handler(svc, event(name)).await.unwrap();
        let status = resp.status().as_u16();
        let Body::Text(body) = resp.body() else {
            panic!("expected a text body")
        };
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn switch_and_rollout_events() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let small = |seed| GenConfig {
            users: 30,
            items: 20,
            seed,
            ..GenConfig::default()
        };
        registry
            .publish("v0.1", &generate(&small(1)).planted_artifacts())
            .await
            .unwrap();
        registry
            .publish("v0.2", &generate(&small(2)).planted_artifacts())
            .await
            .unwrap();
        let svc = Arc::new(
            Service::start(Config {
                registry: dir.path().display().to_string(),
                ..Config::default()
            })
            .await,
        );
        assert_eq!(svc.model().unwrap().version, "v0.2");

        let (status, body) = call(&svc, "switch-get.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (
                body["model_version"].as_str(),
                body["previous_version"].as_str()
            ),
            (Some("v0.1"), Some("v0.2"))
        );
        let (status, body) = call(&svc, "switch-post.json").await;
        assert_eq!(status, 200, "{body}");

        let (status, body) = call(&svc, "switch-hostile.json").await;
        assert_eq!(status, 400, "{body}");

        let (status, body) = call(&svc, "rollout-update.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rollout"]["strategy"], "canary");
        let (status, body) = call(&svc, "rollout-status.json").await;
        assert_eq!(status, 200);
        assert_eq!(body["rollout"]["canary_percentage"], 10.0);
        assert_eq!(body["active_version"], "v0.1");

        // The recommend route is not this function's.
        let (status, _) = call(&svc, "recommend.json").await;
        assert_eq!(status, 404);
    }
}
