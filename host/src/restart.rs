//! Restart strategies, with Flink's names and semantics: what a job does
//! when one of its tasks fails — restart after a delay, or fail for good.
//!
//! This module decides; the job loop (`job.rs`) acts on the decision.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::units::{ConfigError, parse_duration};

/// A restart strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job on the first task failure.
    None,
    /// At most `attempts` restarts over the job's life (never reset),
    /// each after `delay_ms`.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Delay before each restart.
        delay_ms: u64,
    },
    /// Fail when more than `max_failures` failures fall within `interval_ms`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The measuring interval.
        interval_ms: u64,
        /// Delay before each restart.
        delay_ms: u64,
    },
    /// A delay that starts at `initial_ms`, grows by `multiplier` per
    /// failure up to `max_ms`, and resets after `reset_after_ms` without one.
    Exponential {
        /// First delay.
        initial_ms: u64,
        /// Largest delay.
        max_ms: u64,
        /// Growth per failure.
        multiplier: f64,
        /// Quiet time after which the delay resets.
        reset_after_ms: u64,
        /// Jitter as a fraction of the delay (0 to 1).
        jitter: f64,
    },
}

const USAGE: &str = "use `none`, `fixed-delay:ATTEMPTS:DELAY`, \
    `failure-rate:MAX_FAILURES:INTERVAL:DELAY` or \
    `exponential:INITIAL:MAX[:MULTIPLIER[:RESET_AFTER[:JITTER]]]`";

fn ms(s: &str) -> Result<u64, ConfigError> {
    let d = parse_duration(s)?;
    u64::try_from(d.as_millis()).map_err(|_| ConfigError(format!("`{s}` is too long")))
}

impl RestartStrategy {
    /// Parses the `--restart` syntax.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || ConfigError(format!("restart strategy `{s}` is not valid; {USAGE}"));
        let count = |p: &str| p.parse::<u32>().map_err(|_| bad());
        match parts.as_slice() {
            ["none"] => Ok(RestartStrategy::None),
            ["fixed-delay", attempts, delay] => Ok(RestartStrategy::FixedDelay {
                attempts: count(attempts)?,
                delay_ms: ms(delay)?,
            }),
            ["failure-rate", max, interval, delay] => Ok(RestartStrategy::FailureRate {
                max_failures: count(max)?,
                interval_ms: ms(interval)?,
                delay_ms: ms(delay)?,
            }),
            ["exponential", initial, max, rest @ ..] if rest.len() <= 3 => {
                let float = |p: &str| p.parse::<f64>().map_err(|_| bad());
                let multiplier = rest.first().map(|m| float(m)).transpose()?.unwrap_or(2.0);
                let reset_after_ms = rest.get(1).map(|r| ms(r)).transpose()?.unwrap_or(3_600_000);
                let jitter = rest.get(2).map(|j| float(j)).transpose()?.unwrap_or(0.1);
                let strategy = RestartStrategy::Exponential {
                    initial_ms: ms(initial)?,
                    max_ms: ms(max)?,
                    multiplier,
                    reset_after_ms,
                    jitter,
                };
                strategy
                    .validate()
                    .map_err(|e| ConfigError(format!("restart strategy `{s}`: {e}")))?;
                Ok(strategy)
            }
            _ => Err(bad()),
        }
    }

    /// Refuses settings that cannot work, wherever the strategy came from
    /// (a flag, the TOML file, or the guest's description, which is
    /// untrusted input).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            RestartStrategy::Exponential {
                initial_ms,
                max_ms,
                multiplier,
                jitter,
                ..
            } => {
                if !(multiplier >= 1.0 && multiplier.is_finite()) {
                    return Err(ConfigError(format!(
                        "the multiplier must be at least 1, not {multiplier}"
                    )));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(ConfigError(format!(
                        "the jitter must be between 0 and 1, not {jitter}"
                    )));
                }
                if initial_ms > max_ms {
                    return Err(ConfigError(format!(
                        "the initial delay ({initial_ms} ms) is longer than the maximum ({max_ms} ms)"
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for RestartStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RestartStrategy::None => f.write_str("none"),
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                write!(f, "fixed-delay:{attempts}:{delay_ms}ms")
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval_ms,
                delay_ms,
            } => write!(
                f,
                "failure-rate:{max_failures}:{interval_ms}ms:{delay_ms}ms"
            ),
            RestartStrategy::Exponential {
                initial_ms,
                max_ms,
                multiplier,
                reset_after_ms,
                jitter,
            } => write!(
                f,
                "exponential:{initial_ms}ms:{max_ms}ms:{multiplier}:{reset_after_ms}ms:{jitter}"
            ),
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Restart after this delay; `attempt` counts restarts so far, this one included.
    Restart {
        /// Wait this long first.
        delay: Duration,
        /// The restart's number.
        attempt: u32,
    },
    /// Fail the job for good, for this reason.
    GiveUp(String),
}

/// A strategy's running state over the life of one job.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<Instant>,
    next_delay_ms: f64,
    last_failure: Option<Instant>,
    rng: u64,
}

impl RestartTracker {
    /// A fresh tracker.
    pub fn new(strategy: RestartStrategy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let next_delay_ms = match strategy {
            RestartStrategy::Exponential { initial_ms, .. } => initial_ms as f64,
            _ => 0.0,
        };
        RestartTracker {
            strategy,
            restarts: 0,
            failures: VecDeque::new(),
            next_delay_ms,
            last_failure: None,
            rng: seed | 1,
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        let decision = match self.strategy {
            RestartStrategy::None => Decision::GiveUp("the restart strategy is `none`".to_string()),
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                if self.restarts >= attempts {
                    Decision::GiveUp(format!(
                        "the restart strategy allows {attempts} restart(s) and all were used"
                    ))
                } else {
                    self.restart(Duration::from_millis(delay_ms))
                }
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval_ms,
                delay_ms,
            } => {
                let interval = Duration::from_millis(interval_ms);
                while let Some(first) = self.failures.front() {
                    if now.duration_since(*first) > interval {
                        self.failures.pop_front();
                    } else {
                        break;
                    }
                }
                self.failures.push_back(now);
                if self.failures.len() as u64 > u64::from(max_failures) {
                    Decision::GiveUp(format!(
                        "{} failures within {interval_ms} ms exceed the allowed {max_failures}",
                        self.failures.len()
                    ))
                } else {
                    self.restart(Duration::from_millis(delay_ms))
                }
            }
            RestartStrategy::Exponential {
                initial_ms,
                max_ms,
                multiplier,
                reset_after_ms,
                jitter,
            } => {
                if let Some(last) = self.last_failure
                    && now.duration_since(last) >= Duration::from_millis(reset_after_ms)
                {
                    self.next_delay_ms = initial_ms as f64;
                }
                let base = self.next_delay_ms.min(max_ms as f64);
                self.next_delay_ms = (base * multiplier).min(max_ms as f64);
                let spread = base * jitter * (self.random_unit() * 2.0 - 1.0);
                let delay = (base + spread).max(0.0);
                self.restart(Duration::from_secs_f64(delay / 1000.0))
            }
        };
        self.last_failure = Some(now);
        decision
    }

    fn restart(&mut self, delay: Duration) -> Decision {
        self.restarts += 1;
        Decision::Restart {
            delay,
            attempt: self.restarts,
        }
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_strategy() {
        assert_eq!(RestartStrategy::parse("none"), Ok(RestartStrategy::None));
        assert_eq!(
            RestartStrategy::parse("fixed-delay:3:10s"),
            Ok(RestartStrategy::FixedDelay {
                attempts: 3,
                delay_ms: 10_000
            })
        );
        assert_eq!(
            RestartStrategy::parse("failure-rate:2:1m:500ms"),
            Ok(RestartStrategy::FailureRate {
                max_failures: 2,
                interval_ms: 60_000,
                delay_ms: 500
            })
        );
        assert!(matches!(
            RestartStrategy::parse("exponential:100ms:10s"),
            Ok(RestartStrategy::Exponential { multiplier, .. }) if multiplier == 2.0
        ));
        assert!(RestartStrategy::parse("fixed-delay:3").is_err());
        assert_eq!(
            RestartStrategy::parse("exponential:10s:1s"),
            Err(ConfigError("restart strategy `exponential:10s:1s`: the initial delay (10000 ms) is longer than the maximum (1000 ms)".into()))
        );
        assert!(RestartStrategy::parse("exponential:1s:10s:NaN").is_err());
        assert!(RestartStrategy::parse("sometimes").is_err());
    }

    #[test]
    fn fixed_delay_never_resets() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 5,
        });
        let start = Instant::now();
        for attempt in 1..=2 {
            assert_eq!(
                t.on_failure(start + Duration::from_secs(attempt as u64 * 3600)),
                Decision::Restart {
                    delay: Duration::from_millis(5),
                    attempt
                }
            );
        }
        assert!(matches!(
            t.on_failure(start + Duration::from_secs(100_000)),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn failure_rate_counts_within_the_interval() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval_ms: 1000,
            delay_ms: 0,
        });
        let s = Instant::now();
        assert!(matches!(t.on_failure(s), Decision::Restart { .. }));
        assert!(matches!(
            t.on_failure(s + Duration::from_millis(100)),
            Decision::Restart { .. }
        ));
        // The first failure has left the window: two in the last second.
        assert!(matches!(
            t.on_failure(s + Duration::from_millis(1050)),
            Decision::Restart { .. }
        ));
        // Three within one second.
        assert!(matches!(
            t.on_failure(s + Duration::from_millis(1100)),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn exponential_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::Exponential {
            initial_ms: 100,
            max_ms: 350,
            multiplier: 2.0,
            reset_after_ms: 10_000,
            jitter: 0.0,
        });
        let s = Instant::now();
        let delay = |d: Decision| match d {
            Decision::Restart { delay, .. } => delay.as_millis(),
            Decision::GiveUp(r) => panic!("gave up: {r}"),
        };
        assert_eq!(delay(t.on_failure(s)), 100);
        assert_eq!(delay(t.on_failure(s + Duration::from_secs(1))), 200);
        assert_eq!(delay(t.on_failure(s + Duration::from_secs(2))), 350);
        assert_eq!(delay(t.on_failure(s + Duration::from_secs(3))), 350);
        assert_eq!(delay(t.on_failure(s + Duration::from_secs(20))), 100);
    }
}
