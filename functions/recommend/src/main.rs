//! Lambda function `recommend`: a thin adapter over the shared API logic in `recs::api`.

use std::sync::Arc;

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use recs::api::Endpoint;
use recs::service::{Config, Service};

/// The routes this function answers.
const ROUTES: &[Endpoint] = &[Endpoint::Recommend];

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
    async fn events_answer_through_lambda_http() {
        let (_dir, svc) = service().await;
        let (status, body) = call(&svc, "recommend.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], 1);
        assert_eq!(body["items"].as_array().unwrap().len(), 10);
        assert_eq!(body["provenance"]["model_version"], "v0.1");

        let (status, body) = call(&svc, "recommend-unknown-user.json").await;
        assert_eq!(
            (status, body["fallback"].as_str()),
            (200, Some("popularity"))
        );
        assert_eq!(body["items"].as_array().unwrap().len(), 5);

        for bad in ["recommend-bad-k.json", "recommend-bad-user.json"] {
            let (status, body) = call(&svc, bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error_type"], "invalid_input");
        }
        // The recommend function does not answer the health route.
        let (status, _) = call(&svc, "healthz.json").await;
        assert_eq!(status, 404);
    }
}

#[cfg(test)]
mod emf_tests {
    use super::*;

    #[tokio::test]
    async fn every_invocation_writes_contract_emf_lines() {
        let dir = tempfile::tempdir().unwrap();
        let registry = recs::registry::Registry::open(dir.path().to_str().unwrap()).unwrap();
        let data = recs::gen_data::generate(&recs::gen_data::GenConfig {
            users: 30,
            items: 20,
            ..Default::default()
        });
        registry
            .publish("v0.1", &data.planted_artifacts())
            .await
            .unwrap();
        let svc = Arc::new(
            Service::start(Config {
                registry: dir.path().display().to_string(),
                ..Config::default()
            })
            .await,
        );
        let event = |name: &str| {
            let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
            lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        // Cold start: the model load line, then the request line.
        let (resp, lines) =
            recs::lambda::respond_with_metrics(&svc, ROUTES, event("recommend.json"), true).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(lines.len(), 2);
        let docs: Vec<_> = lines
            .iter()
            .map(|l| recs::emf::check_document(l).unwrap())
            .collect();
        assert!(docs[0]["model_load_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(docs[1]["status_class"], "2xx");
        assert_eq!(docs[1]["model_version"], "v0.1");

        // A 400: request line plus its error line.
        let (resp, lines) =
            recs::lambda::respond_with_metrics(&svc, ROUTES, event("recommend-bad-k.json"), false)
                .await;
        assert_eq!(resp.status(), 400);
        let docs: Vec<_> = lines
            .iter()
            .map(|l| recs::emf::check_document(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["status_class"], "4xx");
        assert_eq!(docs[1]["error_type"], "invalid_input");
    }
}
