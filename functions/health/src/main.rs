//! Lambda function `health`: a thin adapter over the shared API logic in `recs::api`.

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use recs::api::Endpoint;
use recs::service::{Config, Service};

/// Answers one invocation; never fails (errors are HTTP responses).
async fn handler(svc: &Service, event: Request) -> Result<Response<Body>, Error> {
    Ok(recs::lambda::respond(svc, Endpoint::Health, event))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    recs::telemetry::init();
    // Loaded once per execution environment (INIT), never per request.
    let svc = Service::start(Config::from_env()?).await;
    let svc = &svc;
    run(service_fn(move |event| handler(svc, event))).await
}
