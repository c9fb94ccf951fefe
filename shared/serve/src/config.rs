//! Settings read from the environment (README, "Configuration"), once per process.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::exposure::ExposureSink;

/// Largest `k` accepted unless `MAX_K` says otherwise.
pub const DEFAULT_MAX_K: usize = 100;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set to a value outside its range.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
}

/// `RECOMMEND_AUTH`: who may ask for whose recommendations (docs/SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecommendAuth {
    /// The default: API Gateway admits only SigV4-signed calls (the app's backend);
    /// the function trusts the caller to ask for the right user.
    #[default]
    Iam,
    /// A JWT authorizer admits the caller, and the token's claim (`AUTH_USER_CLAIM`,
    /// default `sub`) must equal the `{user_id}` asked for, else 403 `forbidden`.
    Jwt {
        /// The claim that names the user.
        claim: String,
    },
    /// No authorizer: anyone may ask for anyone's recommendations (an explicit opt-in).
    Public,
}

/// Settings read from the environment (README, "Configuration").
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_REGISTRY`: a folder or `s3://bucket/prefix` (default `./model_registry`).
    pub registry: String,
    /// `MODEL_VERSION`: serve this version when the registry has no active.json.
    pub version: Option<String>,
    /// `MAX_K`: the largest `k` a request may ask for (default 100).
    pub max_k: usize,
    /// `MOVIE_TITLES`: a titles file; default `<registry>/movie_titles.csv` when present.
    pub titles: Option<PathBuf>,
    /// `CONTAINER_IMAGE_DIGEST`: reported in provenance when the version meta has none.
    pub image_digest: Option<String>,
    /// `ENVIRONMENT`: reported by `/healthz` (default `production`).
    pub environment: String,
    /// `ACTIVE_POLL_SECONDS`: how often to check active.json (default 10).
    pub poll: Duration,
    /// `RECS_ADMIN_TOKEN` (`recs serve` only): the bearer token every admin route
    /// (switch, rollout, experiment, trace) requires when set. On Lambda the admin
    /// routes are IAM-authorised and the variable is ignored (the `Authorization`
    /// header carries the SigV4 signature there).
    pub admin_token: Option<String>,
    /// `RECOMMEND_AUTH` (`iam`, `jwt` or `public`; default `iam`) and
    /// `AUTH_USER_CLAIM` (default `sub`).
    pub recommend_auth: RecommendAuth,
    /// `EVENTS` (else `DRIFT_EVENTS_URI`, [`recs_core::events_location`]): the events
    /// location (folder or `s3://bucket/prefix`) that holds watch/rate events and the
    /// exposure log; the experiment and trace routes read it.
    pub events: Option<String>,
    /// `EXPOSURE_LOG`: `events` (the default when `EVENTS` is set), `stdout` (Lambda:
    /// one log line per response, shipped by Firehose), or `off` (default otherwise).
    pub exposure_log: ExposureSink,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            registry: "model_registry".into(),
            version: None,
            max_k: DEFAULT_MAX_K,
            titles: None,
            image_digest: None,
            environment: "production".into(),
            poll: Duration::from_secs(10),
            admin_token: None,
            recommend_auth: RecommendAuth::Iam,
            events: None,
            exposure_log: ExposureSink::Off,
        }
    }
}

impl Config {
    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Config::default();
        let number =
            |name: &'static str, lo: u64, hi: u64, default: u64, reason: &'static str| match get(
                name,
            ) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        name,
                        value: v,
                        reason,
                    }),
                },
            };
        let max_k = number(
            "MAX_K",
            1,
            10_000,
            d.max_k as u64,
            "must be an integer in 1..=10000",
        )? as usize;
        let poll = number(
            "ACTIVE_POLL_SECONDS",
            0,
            3600,
            10,
            "must be an integer in 0..=3600",
        )?;
        let events = recs_core::events_location(&get);
        let exposure_log = match (get("EXPOSURE_LOG").as_deref(), &events) {
            (None | Some("events"), Some(e)) => ExposureSink::Events(e.clone()),
            (None | Some("off"), _) => ExposureSink::Off,
            (Some("stdout"), _) => ExposureSink::Stdout,
            (Some(v), _) => {
                return Err(ConfigError::Invalid {
                    name: "EXPOSURE_LOG",
                    value: v.to_string(),
                    reason: "must be events (needs EVENTS), stdout or off",
                })
            }
        };
        let recommend_auth = match get("RECOMMEND_AUTH").as_deref() {
            None | Some("iam") => RecommendAuth::Iam,
            Some("jwt") => RecommendAuth::Jwt {
                claim: get("AUTH_USER_CLAIM").unwrap_or_else(|| "sub".into()),
            },
            Some("public") => RecommendAuth::Public,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    name: "RECOMMEND_AUTH",
                    value: v.to_string(),
                    reason: "must be iam, jwt or public",
                })
            }
        };
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or(d.registry),
            version: get("MODEL_VERSION"),
            max_k,
            titles: get("MOVIE_TITLES").map(PathBuf::from),
            image_digest: get("CONTAINER_IMAGE_DIGEST"),
            environment: get("ENVIRONMENT").unwrap_or(d.environment),
            poll: Duration::from_secs(poll),
            admin_token: get("RECS_ADMIN_TOKEN"),
            recommend_auth,
            events,
            exposure_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn config_defaults_and_validation() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!((c.max_k, c.registry.as_str()), (100, "model_registry"));
        assert_eq!(c.poll, Duration::from_secs(10));
        let env: HashMap<&str, &str> = [
            ("MAX_K", "50"),
            ("MODEL_VERSION", "v1.0"),
            ("ACTIVE_POLL_SECONDS", "1"),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((c.max_k, c.version.as_deref()), (50, Some("v1.0")));
        assert_eq!(c.poll, Duration::from_secs(1));
        let ev = |log: Option<&str>, events: Option<&str>| {
            Config::from_lookup(|k| match k {
                "EXPOSURE_LOG" => log.map(String::from),
                "EVENTS" => events.map(String::from),
                _ => None,
            })
        };
        assert_eq!(
            ev(None, Some("/e")).unwrap().exposure_log,
            ExposureSink::Events("/e".into())
        );
        assert_eq!(ev(None, None).unwrap().exposure_log, ExposureSink::Off);
        assert_eq!(
            ev(Some("stdout"), None).unwrap().exposure_log,
            ExposureSink::Stdout
        );
        assert_eq!(
            ev(Some("off"), Some("/e")).unwrap().exposure_log,
            ExposureSink::Off
        );
        // `events` without EVENTS, or a typo, is refused rather than silently off.
        assert!(ev(Some("events"), None).is_err());
        assert!(ev(Some("Stdout"), None).is_err());
        let auth = |mode: &str, claim: Option<&str>| {
            Config::from_lookup(|k| match k {
                "RECOMMEND_AUTH" => Some(mode.to_string()),
                "AUTH_USER_CLAIM" => claim.map(String::from),
                _ => None,
            })
        };
        assert_eq!(c.recommend_auth, RecommendAuth::Iam);
        assert_eq!(
            auth("jwt", None).unwrap().recommend_auth,
            RecommendAuth::Jwt {
                claim: "sub".into()
            }
        );
        assert_eq!(
            auth("jwt", Some("user_id")).unwrap().recommend_auth,
            RecommendAuth::Jwt {
                claim: "user_id".into()
            }
        );
        assert_eq!(
            auth("public", None).unwrap().recommend_auth,
            RecommendAuth::Public
        );
        assert!(auth("JWT", None).is_err());
        for bad in ["0", "-1", "abc", "100000"] {
            let err = Config::from_lookup(|k| (k == "MAX_K").then(|| bad.to_string()));
            assert!(err.is_err(), "{bad}");
        }
    }
}
