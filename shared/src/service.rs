//! What one execution environment (a Lambda instance, or one `recs serve` process)
//! holds: configuration, the served model, titles and metrics. Built once at start,
//! never per request.

use std::path::PathBuf;
use std::sync::Arc;

use crate::metrics::{Metrics, VersionInfo};
use crate::registry::{LoadedModel, Registry};
use crate::titles::Titles;

/// Largest `k` accepted unless `MAX_K` says otherwise.
pub const DEFAULT_MAX_K: usize = 100;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Settings read from the environment (README, "Configuration").
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_REGISTRY`: where versions live (default `./model_registry`).
    pub registry: String,
    /// `MODEL_VERSION`: serve this version instead of `latest.txt`.
    pub version: Option<String>,
    /// `MAX_K`: the largest `k` a request may ask for (default 100).
    pub max_k: usize,
    /// `MOVIE_TITLES`: a titles file; default `<registry>/movie_titles.csv` when present.
    pub titles: Option<PathBuf>,
    /// `CONTAINER_IMAGE_DIGEST`: reported in provenance when the version meta has none.
    pub image_digest: Option<String>,
    /// `ENVIRONMENT`: reported by `/healthz` (default `production`).
    pub environment: String,
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
        }
    }
}

impl Config {
    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Config::default();
        let max_k = match get("MAX_K") {
            None => d.max_k,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "MAX_K",
                        value: v,
                        reason: "must be an integer in 1..=10000",
                    })
                }
            },
        };
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or(d.registry),
            version: get("MODEL_VERSION"),
            max_k,
            titles: get("MOVIE_TITLES").map(PathBuf::from),
            image_digest: get("CONTAINER_IMAGE_DIGEST"),
            environment: get("ENVIRONMENT").unwrap_or(d.environment),
        })
    }
}

/// The model this environment serves, or why it serves none.
pub type ModelState = Result<Arc<LoadedModel>, String>;

/// Shared state of one execution environment.
pub struct Service {
    pub config: Config,
    pub model: ModelState,
    pub titles: Titles,
    pub metrics: Arc<Metrics>,
}

impl Service {
    /// Loads the configured version (or `latest.txt`'s) and the titles. Never fails:
    /// a model that cannot be served becomes the reason `/healthz` reports, and is
    /// counted as a `model_load` error.
    pub async fn start(config: Config) -> Service {
        let metrics = Arc::new(Metrics::default());
        let model = load_model(&config).await;
        match &model {
            Ok(m) => {
                tracing::info!(
                    version = %m.version,
                    users = m.model.n_users(),
                    items = m.model.n_items(),
                    factors = m.model.factors(),
                    load_seconds = m.load_seconds,
                    "model loaded"
                );
                metrics.model_loaded(version_info(m), m.load_seconds);
                metrics.set_healthy(true);
            }
            Err(reason) => {
                tracing::error!(registry = %config.registry, %reason, "no servable model");
                metrics.count_error("model_load", "startup");
            }
        }
        let titles = load_titles(&config);
        Service {
            config,
            model,
            titles,
            metrics,
        }
    }

    /// A service over an already-loaded model (tests, benchmarks).
    pub fn with_model(config: Config, model: LoadedModel, titles: Titles) -> Service {
        let metrics = Arc::new(Metrics::default());
        metrics.model_loaded(version_info(&model), model.load_seconds);
        metrics.set_healthy(true);
        Service {
            config,
            model: Ok(Arc::new(model)),
            titles,
            metrics,
        }
    }
}

/// The `model_version_info` labels of a loaded version.
pub fn version_info(m: &LoadedModel) -> VersionInfo {
    VersionInfo {
        model_name: m.meta.model_name.clone(),
        version: m.version.clone(),
        git_sha: m.meta.git_sha.clone(),
        data_snapshot: m.meta.data_snapshot_id.clone(),
    }
}

async fn load_model(config: &Config) -> ModelState {
    let registry = Registry::open(&config.registry).map_err(|e| e.to_string())?;
    let version = match &config.version {
        Some(v) => v.clone(),
        None => registry
            .latest()
            .await
            .map_err(|e| format!("cannot resolve the version to serve: {e}"))?,
    };
    registry
        .load(&version)
        .await
        .map(Arc::new)
        .map_err(|e| format!("version {version} from {}: {e}", registry.location()))
}

fn load_titles(config: &Config) -> Titles {
    let path = match &config.titles {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(&config.registry).join("movie_titles.csv");
            if !p.exists() {
                return Titles::default();
            }
            p
        }
    };
    match Titles::load(&path) {
        Ok(t) => {
            tracing::info!(path = %path.display(), titles = t.len(), "titles loaded");
            t
        }
        Err(e) => {
            // Titles are decoration: serve "Movie <id>" rather than refuse to start.
            tracing::warn!(error = %e, "titles unavailable; using \"Movie <id>\"");
            Titles::default()
        }
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
        let env: HashMap<&str, &str> = [("MAX_K", "50"), ("MODEL_VERSION", "v1.0")].into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((c.max_k, c.version.as_deref()), (50, Some("v1.0")));
        for bad in ["0", "-1", "abc", "100000"] {
            let err = Config::from_lookup(|k| (k == "MAX_K").then(|| bad.to_string()));
            assert!(err.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn missing_registry_is_a_reason_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            registry: dir.path().join("nothing").display().to_string(),
            ..Config::default()
        };
        let svc = Service::start(config).await;
        let reason = svc.model.unwrap_err();
        assert!(reason.contains("latest.txt"), "{reason}");
    }
}
