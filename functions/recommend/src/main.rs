//! Lambda function `recommend`: `GET /recommend/{user_id}`, `GET /similar/{movie_id}`, and fold-in
//! (`POST /recommend`, `GET /recommend[/{user_id}]?history=`). A thin adapter: the
//! request handling is `recs_serve::api`, the Lambda glue `recs_serve::lambda`.

use recs_serve::api::Endpoint;

/// The routes this function answers.
const ROUTES: &[Endpoint] = &Endpoint::RECOMMEND;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    recs_serve::lambda::run_http(ROUTES).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_tests::{invoke, lambda_event, service_over};

    #[tokio::test]
    async fn events_answer_through_lambda_http() {
        let (_dir, svc) = service_over(&[("v0.1", 42)]).await;
        let (status, body) = invoke(&svc, ROUTES, "recommend.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], 1);
        assert_eq!(body["items"].as_array().unwrap().len(), 10);
        assert_eq!(body["provenance"]["model_version"], "v0.1");

        let (status, body) = invoke(&svc, ROUTES, "recommend-unknown-user.json").await;
        assert_eq!(
            (status, body["fallback"].as_str()),
            (200, Some("popularity"))
        );
        assert_eq!(body["items"].as_array().unwrap().len(), 5);

        for bad in ["recommend-bad-k.json", "recommend-bad-user.json"] {
            let (status, body) = invoke(&svc, ROUTES, bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error_type"], "invalid_input");
        }
        // Fold-in, by POST and by the user-less GET: the given items are not returned.
        for event in ["recommend-fold-in.json", "recommend-fold-in-get.json"] {
            let (status, body) = invoke(&svc, ROUTES, event).await;
            assert_eq!(status, 200, "{event}: {body}");
            assert_eq!(body["fallback"], "folded_in", "{event}");
            assert!(body["user_id"].is_null(), "{event}");
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), 5, "{event}");
            assert!(items
                .iter()
                .all(|m| ![1, 2, 3].contains(&m.as_i64().unwrap())));
        }
        // The recommend function does not answer the health route.
        let (status, _) = invoke(&svc, ROUTES, "healthz.json").await;
        assert_eq!(status, 404);
    }

    /// `GET /similar/{movie_id}` from its API Gateway event, with a genre filter read
    /// from the registry's catalog.
    #[tokio::test]
    async fn similar_answers_through_lambda_http() {
        let (dir, _) = service_over(&[("v0.1", 42)]).await;
        let csv: String = std::iter::once("movie_id,title,genres\n".to_string())
            .chain((1..=40).map(|i| {
                let g = if i % 2 == 0 { "Drama" } else { "Comedy" };
                format!("{i},Movie {i} (1990),{g}\n")
            }))
            .collect();
        std::fs::write(dir.path().join("movie_titles.csv"), csv).unwrap();
        let svc = std::sync::Arc::new(
            recs_serve::Service::start(recs_serve::Config {
                registry: dir.path().display().to_string(),
                ..recs_serve::Config::default()
            })
            .await,
        );
        let (status, body) = invoke(&svc, ROUTES, "similar.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["movie_id"], 1);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 10);
        assert!(
            items.iter().all(|m| m.as_i64().unwrap() % 2 == 0),
            "Drama only: {body}"
        );
        assert_eq!(body["filter_passed"], 20);
    }

    /// RECOMMEND_AUTH=jwt: API Gateway's JWT authorizer verified the token; the
    /// function compares its `sub` claim with the user asked for.
    #[tokio::test]
    async fn a_jwt_for_another_user_is_403() {
        let (dir, svc) = service_over(&[("v0.1", 42)]).await;
        let jwt = std::sync::Arc::new(
            recs_serve::Service::start(recs_serve::Config {
                registry: dir.path().display().to_string(),
                recommend_auth: recs_serve::RecommendAuth::Jwt {
                    claim: "sub".into(),
                },
                ..recs_serve::Config::default()
            })
            .await,
        );
        // The token is user 2's; the path asks for user 1.
        let (status, body) = invoke(&jwt, ROUTES, "recommend-jwt-user-2.json").await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        // The same token for its own user is answered.
        let mut e: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../events/recommend-jwt-user-2.json"
            ))
            .unwrap(),
        )
        .unwrap();
        e["rawPath"] = "/recommend/2".into();
        e["requestContext"]["http"]["path"] = "/recommend/2".into();
        e["pathParameters"]["user_id"] = "2".into();
        let event = lambda_http::request::from_str(&e.to_string()).unwrap();
        let resp = recs_serve::lambda::respond(&jwt, ROUTES, event).await;
        assert_eq!(resp.status(), 200);
        let lambda_http::Body::Text(text) = resp.body() else {
            panic!("a text body")
        };
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        // Internals (commit, data snapshot) are not shown to end users.
        assert_eq!(body["provenance"]["git_sha"], "");
        assert_eq!(body["provenance"]["data_snapshot_id"], "");
        assert_eq!(body["provenance"]["model_version"], "v0.1");
        // No token at all (no authorizer in the event): 401.
        let (status, body) = invoke(&jwt, ROUTES, "recommend.json").await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
        // The default mode (iam) leaves it to API Gateway: the same event is answered.
        let (status, _) = invoke(&svc, ROUTES, "recommend-jwt-user-2.json").await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn every_invocation_writes_contract_emf_lines() {
        let (_dir, svc) = service_over(&[("v0.1", 42)]).await;
        let lines = |cold| {
            let svc = svc.clone();
            move |name: &str| {
                let event = lambda_event(name);
                async move { recs_serve::lambda::respond_with_metrics(&svc, ROUTES, event, cold).await }
            }
        };
        // Cold start: the model load line, then the request line.
        let (resp, out) = lines(true)("recommend.json").await;
        assert_eq!(resp.status(), 200);
        let docs: Vec<_> = out
            .iter()
            .map(|l| recs_telemetry::emf::check_document(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert!(docs[0]["model_load_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(docs[1]["status_class"], "2xx");
        assert_eq!(docs[1]["model_version"], "v0.1");

        // A 400: request line plus its error line.
        let (resp, out) = lines(false)("recommend-bad-k.json").await;
        assert_eq!(resp.status(), 400);
        let docs: Vec<_> = out
            .iter()
            .map(|l| recs_telemetry::emf::check_document(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["status_class"], "4xx");
        assert_eq!(docs[1]["error_type"], "invalid_input");
    }
}
