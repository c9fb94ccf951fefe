//! Lambda function `switch`: the admin routes (`GET|POST /switch`, `/rollout/*`,
//! `/experiment/*`, `/trace/{request_id}`), the app of `recs_serve::api` with these
//! routes. API Gateway's AWS_IAM authorizer guards them; `RECS_ADMIN_TOKEN` is ignored
//! on Lambda (the `Authorization` header carries the SigV4 signature there).

use recs_serve::api::Endpoint;

/// The routes this function answers.
const ROUTES: &[Endpoint] = &Endpoint::ADMIN;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    recs_serve::lambda::run_http(ROUTES).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_tests::{invoke, service_over};

    #[tokio::test]
    async fn switch_and_rollout_events() {
        let (_dir, svc) = service_over(&[("v0.1", 1), ("v0.2", 2)]).await;
        assert_eq!(svc.model().unwrap().version, "v0.2");

        let (status, body) = invoke(&svc, ROUTES, "switch-get.json").await;
        assert_eq!(status, 200, "{body}");
        let versions = (
            body["model_version"].as_str(),
            body["previous_version"].as_str(),
        );
        assert_eq!(versions, (Some("v0.1"), Some("v0.2")));
        let (status, body) = invoke(&svc, ROUTES, "switch-post.json").await;
        assert_eq!(status, 200, "{body}");

        let (status, body) = invoke(&svc, ROUTES, "switch-hostile.json").await;
        assert_eq!(status, 400, "{body}");

        let (status, body) = invoke(&svc, ROUTES, "rollout-update.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rollout"]["strategy"], "canary");
        let (status, body) = invoke(&svc, ROUTES, "rollout-status.json").await;
        assert_eq!(status, 200);
        assert_eq!(body["rollout"]["canary_percentage"], 10.0);
        assert_eq!(body["active_version"], "v0.1");

        // The recommend route is not this function's.
        let (status, _) = invoke(&svc, ROUTES, "recommend.json").await;
        assert_eq!(status, 404);

        // Takedowns: block from the event's body, then list.
        let (status, body) = invoke(&svc, ROUTES, "catalog-block.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["revision"], 1);
        let blocked = body["blocked"].clone();
        assert!(!blocked.as_array().unwrap().is_empty());
        let (status, body) = invoke(&svc, ROUTES, "catalog-blocked.json").await;
        assert_eq!(status, 200, "{body}");
        let listed: Vec<serde_json::Value> = body["movies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["movie_id"].clone())
            .collect();
        assert_eq!(serde_json::Value::from(listed), blocked);
        assert_eq!(body["applied_revision"], 1);
    }
}
