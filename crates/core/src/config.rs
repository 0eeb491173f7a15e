//! Configuration, read once per cold start from the environment that `template.yaml` sets.
//! Every value has a template parameter behind it; the README lists them all.

use crate::domain::policy::{parse_launch_hooks, parse_switch, parse_types, InFlight, Mode, Policy};
use crate::domain::reserved::{parse_declared, Reservation};
use crate::domain::savings::PriceTable;
use crate::error::ConfigError;

/// Which function is reading its configuration: each requires only the queues it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Scanner,
    SpotCreator,
    Swapper,
    Interruption,
    /// The command line (`asg-optimizer plan` / `status`): reads only, talks to no queue.
    Cli,
}

/// What to do when EC2 recommends rebalancing away from one of our Spot instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceAction {
    /// Do nothing.
    Ignore,
    /// Back off its pool; leave the instance running (default).
    Backoff,
    /// Back off its pool and have the group replace it now, as for an interruption warning.
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Tag key and value that opt a group in (`AsgOptimiser` = `true`).
    pub opt_in_key: String,
    pub opt_in_value: String,
    /// FIFO queue the scanner (and, for rebalance replacements, the interruption handler) feeds
    /// and the spot-creator consumes.
    pub spot_queue_url: String,
    /// Queue the spot-creator feeds and the swapper consumes (and re-feeds while it waits).
    pub swap_queue_url: String,
    /// Policy of every group, before its own tags override it: mode (DRY_RUN), On-Demand floor,
    /// replacements in flight (MAX_IN_FLIGHT_PERCENT), allowed and denied instance types.
    pub policy: Policy,
    /// How much larger (vCPUs and memory) than the On-Demand type a Spot type may be.
    pub max_size_factor: f64,
    /// How long a Spot pool is left alone after no capacity or an interruption.
    pub pool_backoff: i64,
    pub rebalance: RebalanceAction,
    /// How long a scan's claim on an On-Demand instance lasts before its Spot copy must exist.
    pub claim_ttl: i64,
    /// How long to wait between readiness checks of a Spot instance (SQS DelaySeconds, 1..=900).
    pub ready_delay: i32,
    /// How long after launch a Spot instance may take to pass its status checks.
    pub ready_deadline: i64,
    /// Age after which an unattached Spot instance of ours is an orphan (> ready_deadline).
    pub orphan_deadline: i64,
    /// How long an On-Demand instance is left alone after its replacement failed.
    pub retry_after_failure: i64,
    /// SQS records handled at once within one invocation.
    pub concurrency: usize,
    /// CloudWatch namespace of the metrics the functions emit.
    pub metrics_namespace: String,
    /// Fixed prices to estimate savings with; empty means look them up.
    pub price_table: PriceTable,
    /// Keep On-Demand the instances that active Reserved Instances pay for.
    pub reserved_instances: bool,
    /// Reserved capacity this account cannot see (shared from elsewhere in the organisation).
    pub declared_reservations: Vec<Reservation>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            opt_in_key: "AsgOptimiser".into(),
            opt_in_value: "true".into(),
            spot_queue_url: String::new(),
            swap_queue_url: String::new(),
            policy: Policy::default(),
            max_size_factor: 2.0,
            pool_backoff: 30 * 60,
            rebalance: RebalanceAction::Backoff,
            claim_ttl: 15 * 60,
            ready_delay: 30,
            ready_deadline: 15 * 60,
            orphan_deadline: 20 * 60,
            retry_after_failure: 30 * 60,
            concurrency: 4,
            metrics_namespace: "AsgOptimizer".into(),
            price_table: PriceTable::default(),
            reserved_instances: true,
            declared_reservations: Vec::new(),
        }
    }
}

/// Seconds between the readiness deadline and the orphan deadline, at least: a swapper that
/// found its copy ready just in time may still be attaching it.
pub const ORPHAN_MARGIN: i64 = crate::domain::model::SWAPPER_SPAN;

fn invalid_value(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, value: value.to_string(), reason: reason.to_string() }
}

impl Config {
    pub fn from_env(function: Function) -> Result<Self, ConfigError> {
        Self::from_lookup(function, |name| std::env::var(name).ok())
    }

    pub fn from_lookup(function: Function, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Config::default();
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let number = |name: &'static str, default: i64, min: i64, max: i64| -> Result<i64, ConfigError> {
            let Some(raw) = get(name) else { return Ok(default) };
            let invalid = |reason: String| ConfigError::Invalid { name, value: raw.clone(), reason };
            let n: i64 = raw.parse().map_err(|_| invalid("not a whole number".into()))?;
            if n < min || n > max {
                return Err(invalid(format!("must be between {min} and {max}")));
            }
            Ok(n)
        };

        let types = |name: &'static str| -> Result<Vec<String>, ConfigError> {
            get(name)
                .map_or(Ok(Vec::new()), |raw| parse_types(&raw).map_err(|reason| invalid_value(name, &raw, &reason)))
        };

        let switch = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            get(name).map_or(Ok(default), |raw| {
                parse_switch(&raw).ok_or_else(|| invalid_value(name, &raw, "must be enabled or disabled"))
            })
        };

        let spot_queue_url = match function {
            Function::Scanner => required("SPOT_CREATOR_QUEUE_URL")?,
            // The interruption handler enqueues rebalance replacements (RebalanceAction=replace).
            Function::Interruption if get("REBALANCE_ACTION").as_deref() == Some("replace") => {
                required("SPOT_CREATOR_QUEUE_URL")?
            }
            _ => String::new(),
        };
        if function == Function::Scanner && !spot_queue_url.ends_with(".fifo") {
            // Deduplication by On-Demand instance id is what keeps two overlapping scans from
            // enqueuing the same instance twice.
            return Err(ConfigError::Invalid {
                name: "SPOT_CREATOR_QUEUE_URL",
                value: spot_queue_url,
                reason: "must be a FIFO queue (name ending in .fifo)".into(),
            });
        }
        let config = Config {
            opt_in_key: get("OPT_IN_TAG_KEY").unwrap_or(d.opt_in_key),
            opt_in_value: get("OPT_IN_TAG_VALUE").unwrap_or(d.opt_in_value),
            spot_queue_url,
            // The interruption handler and the command line send nothing.
            swap_queue_url: match function {
                Function::Interruption | Function::Cli => get("SWAPPER_QUEUE_URL").unwrap_or_default(),
                _ => required("SWAPPER_QUEUE_URL")?,
            },
            policy: Policy {
                mode: match get("DRY_RUN").as_deref() {
                    None | Some("false") => Mode::Enabled,
                    Some("true") => Mode::DryRun,
                    Some(other) => return Err(invalid_value("DRY_RUN", other, "must be true or false")),
                },
                min_on_demand: number("MIN_ON_DEMAND_COUNT", 0, 0, 100_000)? as usize,
                min_on_demand_percent: number("MIN_ON_DEMAND_PERCENT", 0, 0, 100)? as u32,
                in_flight: InFlight::Percent(number("MAX_IN_FLIGHT_PERCENT", 10, 1, 100)? as u32),
                allowed_types: types("ALLOWED_INSTANCE_TYPES")?,
                denied_types: types("DENIED_INSTANCE_TYPES")?,
                rollout: switch("ROLLOUT", d.policy.rollout)?,
                rollout_in_flight: match get("ROLLOUT_MAX_IN_FLIGHT") {
                    None => d.policy.rollout_in_flight,
                    Some(raw) => InFlight::parse(&raw).ok_or_else(|| {
                        invalid_value("ROLLOUT_MAX_IN_FLIGHT", &raw, "must be a count or a percentage from 1% to 100%")
                    })?,
                },
                healthy_deadline: number("HEALTHY_DEADLINE_SECONDS", d.policy.healthy_deadline, 1, 86_400)?,
                ignore_launch_hooks: match get("LAUNCH_HOOKS") {
                    None => d.policy.ignore_launch_hooks,
                    Some(raw) => parse_launch_hooks(&raw)
                        .ok_or_else(|| invalid_value("LAUNCH_HOOKS", &raw, "must be respect or ignore"))?,
                },
            },
            reserved_instances: switch("RESERVED_INSTANCES", d.reserved_instances)?,
            declared_reservations: match get("DECLARED_RESERVATIONS") {
                None => Vec::new(),
                Some(raw) => {
                    parse_declared(&raw).map_err(|reason| invalid_value("DECLARED_RESERVATIONS", &raw, &reason))?
                }
            },
            max_size_factor: match get("MAX_SIZE_FACTOR") {
                None => d.max_size_factor,
                Some(raw) => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (1.0..=16.0).contains(f))
                    .ok_or_else(|| invalid_value("MAX_SIZE_FACTOR", &raw, "must be a number from 1 to 16"))?,
            },
            pool_backoff: number("POOL_BACKOFF_SECONDS", d.pool_backoff, 0, 7 * 86_400)?,
            rebalance: match get("REBALANCE_ACTION").as_deref() {
                None | Some("backoff") => RebalanceAction::Backoff,
                Some("ignore") => RebalanceAction::Ignore,
                Some("replace") => RebalanceAction::Replace,
                Some(other) => {
                    return Err(invalid_value("REBALANCE_ACTION", other, "must be ignore, backoff or replace"))
                }
            },
            claim_ttl: number("CLAIM_TTL_SECONDS", d.claim_ttl, 60, 86_400)?,
            // At least 1 s: 0 would make a waiting swap re-send itself in a tight loop.
            ready_delay: number("READY_CHECK_DELAY_SECONDS", d.ready_delay.into(), 1, 900)? as i32,
            ready_deadline: number("READY_DEADLINE_SECONDS", d.ready_deadline, 1, 86_400)?,
            orphan_deadline: number("ORPHAN_DEADLINE_SECONDS", d.orphan_deadline, 1, 7 * 86_400)?,
            retry_after_failure: number("RETRY_AFTER_FAILURE_SECONDS", d.retry_after_failure, 0, 7 * 86_400)?,
            concurrency: number("RECORD_CONCURRENCY", d.concurrency as i64, 1, 10)? as usize,
            metrics_namespace: get("METRICS_NAMESPACE").unwrap_or(d.metrics_namespace),
            price_table: match get("PRICE_TABLE") {
                None => PriceTable::default(),
                Some(raw) => PriceTable::parse(&raw).map_err(|reason| ConfigError::Invalid {
                    name: "PRICE_TABLE",
                    value: raw.clone(),
                    reason,
                })?,
            },
        };
        if config.orphan_deadline < config.ready_deadline + ORPHAN_MARGIN {
            // The swapper never attaches a copy past its readiness deadline; the margin outlasts
            // a swapper invocation that checked the deadline just before it, so the scanner
            // never terminates a copy about to be attached.
            return Err(ConfigError::Invalid {
                name: "ORPHAN_DEADLINE_SECONDS",
                value: config.orphan_deadline.to_string(),
                reason: format!(
                    "must be at least READY_DEADLINE_SECONDS ({}) + {ORPHAN_MARGIN}",
                    config.ready_deadline
                ),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_when_only_queues_are_set() {
        let c = Config::from_lookup(Function::Swapper, lookup(&[("SWAPPER_QUEUE_URL", "http://q/swap")])).unwrap();
        assert_eq!(c, Config { swap_queue_url: "http://q/swap".into(), ..Config::default() });
    }

    #[test]
    fn scanner_requires_a_fifo_spot_queue() {
        let err = Config::from_lookup(Function::Scanner, lookup(&[("SWAPPER_QUEUE_URL", "s")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("SPOT_CREATOR_QUEUE_URL"));
        let err = Config::from_lookup(
            Function::Scanner,
            lookup(&[("SWAPPER_QUEUE_URL", "s"), ("SPOT_CREATOR_QUEUE_URL", "http://q/spot")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn invalid_numbers_name_the_variable() {
        for (value, reason) in
            [("abc", "not a whole number"), ("901", "between 1 and 900"), ("0", "between 1 and 900"), ("-1", "between")]
        {
            let err = Config::from_lookup(
                Function::Swapper,
                lookup(&[("SWAPPER_QUEUE_URL", "s"), ("READY_CHECK_DELAY_SECONDS", value)]),
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("READY_CHECK_DELAY_SECONDS") && text.contains(reason), "{text}");
        }
    }

    #[test]
    fn a_price_table_is_read_or_refused() {
        let c = Config::from_lookup(
            Function::Scanner,
            lookup(&[
                ("SWAPPER_QUEUE_URL", "s"),
                ("SPOT_CREATOR_QUEUE_URL", "q.fifo"),
                ("PRICE_TABLE", "m5.large=0.096:0.03"),
            ]),
        )
        .unwrap();
        assert_eq!(c.price_table.0["m5.large"], (0.096, 0.03));
        let err =
            Config::from_lookup(Function::Swapper, lookup(&[("SWAPPER_QUEUE_URL", "s"), ("PRICE_TABLE", "m5.large")]))
                .unwrap_err();
        assert!(err.to_string().contains("PRICE_TABLE"), "{err}");
    }

    #[test]
    fn policy_defaults_and_pool_settings_are_read_or_refused() {
        let c = Config::from_lookup(
            Function::Interruption,
            lookup(&[
                ("DRY_RUN", "true"),
                ("MIN_ON_DEMAND_COUNT", "2"),
                ("MIN_ON_DEMAND_PERCENT", "20"),
                ("MAX_IN_FLIGHT_PERCENT", "25"),
                ("ALLOWED_INSTANCE_TYPES", "m5*,c5*"),
                ("DENIED_INSTANCE_TYPES", "*.metal"),
                ("MAX_SIZE_FACTOR", "1.5"),
                ("POOL_BACKOFF_SECONDS", "600"),
                ("REBALANCE_ACTION", "replace"),
                ("SPOT_CREATOR_QUEUE_URL", "q.fifo"),
                ("ROLLOUT", "disabled"),
                ("ROLLOUT_MAX_IN_FLIGHT", "2"),
                ("RESERVED_INSTANCES", "false"),
                ("DECLARED_RESERVATIONS", "m5.large=4 c5.large@eu-west-1a=1"),
                ("HEALTHY_DEADLINE_SECONDS", "300"),
                ("LAUNCH_HOOKS", "ignore"),
            ]),
        )
        .unwrap();
        assert_eq!((c.policy.rollout, c.policy.rollout_in_flight), (false, InFlight::Count(2)));
        assert_eq!((c.policy.healthy_deadline, c.policy.ignore_launch_hooks), (300, true));
        assert!(!c.reserved_instances);
        assert_eq!(c.declared_reservations.len(), 2);
        let p = &c.policy;
        assert_eq!((p.mode, p.min_on_demand, p.min_on_demand_percent), (Mode::DryRun, 2, 20));
        assert_eq!(p.in_flight, InFlight::Percent(25));
        assert_eq!((p.allowed_types.len(), p.denied_types.len()), (2, 1));
        assert_eq!((c.max_size_factor, c.pool_backoff, c.rebalance), (1.5, 600, RebalanceAction::Replace));
        for (name, value) in [
            ("DRY_RUN", "yes"),
            ("MAX_SIZE_FACTOR", "0.5"),
            ("REBALANCE_ACTION", "panic"),
            ("DENIED_INSTANCE_TYPES", "m5;x"),
            ("MIN_ON_DEMAND_PERCENT", "120"),
            ("ROLLOUT", "maybe"),
            ("ROLLOUT_MAX_IN_FLIGHT", "0%"),
            ("RESERVED_INSTANCES", "1"),
            ("DECLARED_RESERVATIONS", "m5.large"),
            ("HEALTHY_DEADLINE_SECONDS", "0"),
            ("LAUNCH_HOOKS", "maybe"),
        ] {
            let err = Config::from_lookup(Function::Interruption, lookup(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        // Replacing on a rebalance recommendation goes through the spot-creator's queue.
        let err = Config::from_lookup(Function::Interruption, lookup(&[("REBALANCE_ACTION", "replace")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("SPOT_CREATOR_QUEUE_URL"));
    }

    #[test]
    fn orphan_deadline_must_outlast_the_readiness_deadline() {
        let err = Config::from_lookup(
            Function::Swapper,
            lookup(&[
                ("SWAPPER_QUEUE_URL", "s"),
                ("READY_DEADLINE_SECONDS", "600"),
                ("ORPHAN_DEADLINE_SECONDS", "700"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ORPHAN_DEADLINE_SECONDS"), "{err}");
    }
}
