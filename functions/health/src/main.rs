//! Lambda function `health`: `GET /healthz`, 503 with the reason when no model is
//! servable. A thin adapter over `recs_serve::api` / `recs_serve::lambda`.

use recs_serve::api::Endpoint;

/// The routes this function answers.
const ROUTES: &[Endpoint] = &[Endpoint::Health];

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    recs_serve::lambda::run_http(ROUTES).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_tests::{invoke, service_over};

    #[tokio::test]
    async fn healthz_event_names_the_version() {
        let (_dir, svc) = service_over(&[("v0.1", 42)]).await;
        let (status, body) = invoke(&svc, ROUTES, "healthz.json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], "v0.1");
    }

    #[tokio::test]
    async fn healthz_is_503_with_the_reason_when_nothing_is_servable() {
        let (_dir, svc) = service_over(&[]).await;
        let (status, body) = invoke(&svc, ROUTES, "healthz.json").await;
        assert_eq!(status, 503);
        assert_eq!(body["error_type"], "model_unavailable");
        // The public answer names no registry; the reason is the switch function's
        // (admin, IAM) /rollout/status.
        assert!(!body.to_string().contains("latest.txt"), "{body}");
        let admin = &recs_serve::api::Endpoint::ADMIN;
        let (status, body) = invoke(&svc, admin, "rollout-status.json").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["served"]["detail"]
                .as_str()
                .unwrap()
                .contains("latest.txt"),
            "{body}"
        );
    }
}
