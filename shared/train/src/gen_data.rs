//! Synthetic MovieLens-format data with known structure, so tests, benchmarks and
//! the demo registry need no licensed data: power-law item popularity, planted
//! latent user/item factors that drive both what users rate and how they rate it,
//! timestamps and titles. Deterministic for a seed.

use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use serde_json::json;

use recs_core::{Artifacts, CsrPattern, Factors, Interaction};

const GENRES: [&str; 12] = [
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Romance",
    "Sci-Fi",
    "Thriller",
];
/// 2025-01-01T00:00:00Z: the synthetic ratings span the following year.
const FIRST_TIMESTAMP: i64 = 1_735_689_600;

/// Shape of the generated data.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Users, with ids 1..=users (at least 1).
    pub users: usize,
    /// Movies, with ids 1..=items (at least 2).
    pub items: usize,
    /// Dimensions of the planted latent structure.
    pub factors: usize,
    /// Median ratings per user (per-user counts are log-normal around it).
    pub ratings_per_user: usize,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    /// RNG seed: the same config gives the same data.
    pub seed: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            users: 600,
            items: 400,
            factors: 8,
            ratings_per_user: 40,
            zipf: 1.0,
            seed: 42,
        }
    }
}

/// Generated data plus the structure that generated it.
pub struct Synthetic {
    /// The config it was generated from.
    config: GenConfig,
    /// One rating per (user, movie), by user then movie: whole stars 1-5, epoch-ms times.
    pub ratings: Vec<Interaction>,
    /// (movie id, title, genres)
    titles: Vec<(i64, String, String)>,
    /// users x factors, C order.
    user_factors: Vec<f32>,
    /// items x factors, C order.
    item_factors: Vec<f32>,
    /// log popularity weight per item.
    item_log_pop: Vec<f32>,
}

fn gaussian_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
    (0..rows * cols).map(|_| normal.sample(rng)).collect()
}

/// Generates ratings for `config`. User ids are 1..=users, movie ids 1..=items.
pub fn generate(config: &GenConfig) -> Synthetic {
    assert!(
        config.users > 0 && config.items > 1 && config.factors > 0,
        "empty config"
    );
    let mut rng = StdRng::seed_from_u64(config.seed);
    let d = config.factors;
    let user_factors = gaussian_matrix(&mut rng, config.users, d);
    let item_factors = gaussian_matrix(&mut rng, config.items, d);
    // Zipf weights over a random permutation, so popularity is not the id order.
    let mut ranks: Vec<usize> = (0..config.items).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.random_range(0..=i));
    }
    let item_log_pop: Vec<f32> = ranks
        .iter()
        .map(|&r| (-(config.zipf) * ((r + 1) as f64).ln()) as f32)
        .collect();

    let scale = 1.0 / (d as f32).sqrt();
    let counts =
        LogNormal::new((config.ratings_per_user as f64).ln(), 0.6).expect("valid lognormal");
    let noise = Normal::new(0.0f32, 0.5).expect("valid normal");
    let mut ratings = Vec::new();
    let mut keyed: Vec<(f32, usize)> = Vec::with_capacity(config.items);
    for u in 0..config.users {
        let uf = &user_factors[u * d..(u + 1) * d];
        let n = (counts.sample(&mut rng).round() as usize)
            .clamp(5, config.items / 2)
            .max(1);
        // Efraimidis-Spirakis weighted sampling without replacement: the n largest
        // ln(U)/w keys. Weight = popularity x exp(2 x affinity).
        keyed.clear();
        let affinity: Vec<f32> = (0..config.items)
            .map(|i| recs_core::dot(uf, &item_factors[i * d..(i + 1) * d]) * scale)
            .collect();
        for (i, a) in affinity.iter().enumerate() {
            let w = (item_log_pop[i] + 2.0 * a).exp().max(f32::MIN_POSITIVE);
            let r: f32 = rng.random_range(f32::EPSILON..1.0);
            keyed.push((r.ln() / w, i));
        }
        keyed.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
        let mut chosen: Vec<usize> = keyed[..n].iter().map(|&(_, i)| i).collect();
        chosen.sort_unstable();
        let mut ts = FIRST_TIMESTAMP + rng.random_range(0..300 * 86_400);
        for i in chosen {
            let score = 3.3 + 1.3 * affinity[i] + noise.sample(&mut rng);
            ratings.push(Interaction {
                user: u as i64 + 1,
                item: i as i64 + 1,
                rating: Some(score.round().clamp(1.0, 5.0)),
                ts_ms: Some(ts * 1000),
            });
            ts += rng.random_range(30..86_400);
        }
    }
    let titles = (0..config.items)
        .map(|i| {
            let v = &item_factors[i * d..(i + 1) * d];
            let top = (0..d)
                .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
                .unwrap_or(0);
            let year = 1950 + (i * 7919) % 75;
            (
                i as i64 + 1,
                format!("Synthetic Movie {} ({year})", i + 1),
                format!(
                    "{}|{}",
                    GENRES[top % GENRES.len()],
                    GENRES[(top + 5) % GENRES.len()]
                ),
            )
        })
        .collect();
    Synthetic {
        config: config.clone(),
        ratings,
        titles,
        user_factors,
        item_factors,
        item_log_pop,
    }
}

impl Synthetic {
    /// Writes `ratings.csv` in MovieLens' CSV form (`userId,movieId,rating,timestamp`).
    pub fn write_ratings_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(w, "userId,movieId,rating,timestamp")?;
        for r in &self.ratings {
            // Whole stars and epoch seconds, as MovieLens writes them.
            let (rating, secs) = (r.rating.unwrap_or(0.0), r.ts_ms.unwrap_or(0) / 1000);
            writeln!(w, "{},{},{rating},{secs}", r.user, r.item)?;
        }
        w.flush()
    }

    /// Writes `movie_titles.csv` (`movie_id,title,genres`).
    pub fn write_titles_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(["movie_id", "title", "genres"])?;
        for (id, title, genres) in &self.titles {
            w.write_record([id.to_string().as_str(), title, genres])?;
        }
        w.flush()
    }

    /// A servable model made of the planted factors (plus a popularity dimension),
    /// with every rated item marked seen. It stands in for a trained model in the
    /// demo registry and in tests; its meta.json says so.
    pub fn planted_artifacts(&self) -> Artifacts {
        let c = &self.config;
        let d = c.factors;
        let scale = 1.0 / (d as f32).sqrt();
        let mut uf = Vec::with_capacity(c.users * (d + 1));
        for u in 0..c.users {
            uf.extend(
                self.user_factors[u * d..(u + 1) * d]
                    .iter()
                    .map(|x| x * scale),
            );
            uf.push(0.5);
        }
        let mut itf = Vec::with_capacity(c.items * (d + 1));
        for i in 0..c.items {
            itf.extend_from_slice(&self.item_factors[i * d..(i + 1) * d]);
            // log(items / rank) >= 0, so scores read as "higher is better" from 0 up.
            itf.push(self.item_log_pop[i] + (c.items as f32).ln());
        }
        let mut rows = vec![Vec::new(); c.users];
        for r in &self.ratings {
            rows[(r.user - 1) as usize].push((r.item - 1) as u32);
        }
        let model_meta = json!({
            "type": "ALS",
            "factors": d + 1,
            "users": c.users,
            "items": c.items,
            "trainer": "planted (recs gen-data)",
            "note": "Planted generator factors, not a trained model: a stand-in until `recs train` publishes one.",
            "seed": c.seed,
        });
        let mut version_fields = serde_json::Map::new();
        version_fields.insert("git_sha".into(), "unknown".into());
        version_fields.insert(
            "data_snapshot_id".into(),
            format!("synthetic-seed-{}", c.seed).into(),
        );
        version_fields.insert("note".into(), model_meta["note"].clone());
        Artifacts {
            user_factors: Factors {
                shape: vec![c.users, d + 1],
                data: uf,
            },
            item_factors: Factors {
                shape: vec![c.items, d + 1],
                data: itf,
            },
            users: (1..=c.users as i64).collect(),
            items: (1..=c.items as i64).collect(),
            seen: CsrPattern::from_rows(c.items, rows),
            model_meta,
            version_fields,
            ann: recs_core::ann::AnnBuild::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed() {
        let small = GenConfig {
            users: 50,
            items: 80,
            ..GenConfig::default()
        };
        let a = generate(&small);
        let b = generate(&small);
        assert_eq!(a.ratings, b.ratings);
        let c = generate(&GenConfig { seed: 7, ..small });
        assert_ne!(a.ratings, c.ratings);
    }

    #[test]
    fn popularity_is_skewed_and_ratings_in_range() {
        let s = generate(&GenConfig::default());
        let mut counts = vec![0usize; s.config.items];
        for r in &s.ratings {
            assert!(r
                .rating
                .is_some_and(|x| (1.0..=5.0).contains(&x) && x.fract() == 0.0));
            counts[(r.item - 1) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_decile: usize = counts[..counts.len() / 10].iter().sum();
        // Power law: the top 10% of items get far more than 10% of ratings.
        assert!(
            top_decile * 4 > s.ratings.len(),
            "{top_decile} of {}",
            s.ratings.len()
        );
        // Every user rated something, every rating has a distinct (user, item).
        let mut pairs: Vec<_> = s.ratings.iter().map(|r| (r.user, r.item)).collect();
        pairs.dedup();
        assert_eq!(pairs.len(), s.ratings.len());
    }
}
