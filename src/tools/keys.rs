//! Key choice for load: uniform, zipfian(theta), or hot/cold as the seed's
//! generator does (a fraction `hot_ratio` of requests hit a small hot set).

use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// How keys are drawn from a key space of `n` keys.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent theta (rank 1 most popular).
    Zipf(f64),
    /// With probability `ratio`, one of `hot_keys` hot keys; else uniform.
    HotCold {
        /// Fraction of requests that go to hot keys.
        ratio: f64,
        /// Size of the hot set.
        hot_keys: u64,
    },
}

impl std::str::FromStr for KeyDist {
    type Err = String;

    /// `uniform`, `zipf:0.99`, `hotcold:0.2` or `hotcold:0.2:100`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |v: &str, what: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{what} {v:?} is not a number"))
        };
        match parts.as_slice() {
            ["uniform"] => Ok(KeyDist::Uniform),
            ["zipf"] => Ok(KeyDist::Zipf(0.99)),
            ["zipf", t] => {
                let t = num(t, "zipf theta")?;
                if t > 0.0 && t.is_finite() {
                    Ok(KeyDist::Zipf(t))
                } else {
                    Err(format!("zipf theta must be > 0, got {t}"))
                }
            }
            ["hotcold", r] | ["hotcold", r, _] => {
                let ratio = num(r, "hot ratio")?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(format!("hot ratio must be in [0, 1], got {ratio}"));
                }
                let hot_keys = match parts.get(2) {
                    Some(h) => h.parse::<u64>().ok().filter(|&h| h > 0).ok_or_else(|| format!("hot key count {h:?} must be a positive integer"))?,
                    None => 100,
                };
                Ok(KeyDist::HotCold { ratio, hot_keys })
            }
            _ => Err(format!("unknown key distribution {s:?}: use uniform, zipf[:theta] or hotcold:ratio[:hot_keys]")),
        }
    }
}

/// Draws key indexes in `0..n`.
pub struct KeyGen {
    n: u64,
    dist: KeyDist,
    zipf: Option<Zipf<f64>>,
}

impl KeyGen {
    /// A generator over `n` keys.
    pub fn new(n: u64, dist: KeyDist) -> Result<KeyGen, String> {
        if n == 0 {
            return Err("the key space must hold at least one key".into());
        }
        let zipf = match dist {
            KeyDist::Zipf(t) => Some(Zipf::new(n as f64, t).map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(KeyGen { n, dist, zipf })
    }

    /// The next key index, and whether it was drawn from the hot set.
    pub fn next(&self, rng: &mut impl Rng) -> (u64, bool) {
        match &self.dist {
            KeyDist::Uniform => (rng.random_range(0..self.n), false),
            KeyDist::Zipf(_) => {
                let z = self.zipf.as_ref().map_or(1.0, |z| z.sample(rng));
                ((z as u64).saturating_sub(1).min(self.n - 1), false)
            }
            KeyDist::HotCold { ratio, hot_keys } => {
                if rng.random_bool(*ratio) {
                    (rng.random_range(0..(*hot_keys).min(self.n)), true)
                } else {
                    (rng.random_range(0..self.n), false)
                }
            }
        }
    }
}
