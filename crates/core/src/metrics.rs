//! CloudWatch metrics in Embedded Metric Format: one JSON document per invocation, written to
//! stdout, turned into metrics by CloudWatch Logs. No API call.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// Scanner: instances enqueued for replacement (by Spot, or by On-Demand for the floor).
pub const REPLACEMENTS_STARTED: &str = "ReplacementsStarted";
/// Swapper: On-Demand instances retired after their Spot copy went InService.
pub const REPLACEMENTS_COMPLETED: &str = "ReplacementsCompleted";
/// Swapper: swaps given up (Spot copy not ready in time, attach refused, rolled back).
pub const REPLACEMENTS_FAILED: &str = "ReplacementsFailed";
/// Spot-creator: no Spot capacity or launch refused: the On-Demand instance is kept.
pub const FALLBACKS_TO_ON_DEMAND: &str = "FallbacksToOnDemand";
/// Spot-creator: Spot copies launched.
pub const SPOT_LAUNCHED: &str = "SpotInstancesLaunched";
/// Spot-creator: On-Demand copies launched to hold a group's On-Demand floor.
pub const ON_DEMAND_LAUNCHED: &str = "OnDemandInstancesLaunched";
/// Spot-creator and interruption handler: Spot pools backed off (no capacity, interruption).
pub const POOLS_BACKED_OFF: &str = "PoolsBackedOff";
/// Interruption handler: our Spot instances handed back to their group ahead of an interruption.
pub const INTERRUPTIONS_HANDLED: &str = "InterruptionsHandled";
/// Scanner: On-Demand instances left alone because every compatible Spot pool is backed off.
pub const ON_DEMAND_HELD_BACK: &str = "OnDemandHeldBack";
/// Scanner: instances running another configuration than their group's current one.
pub const OUTDATED_INSTANCES: &str = "OutdatedInstances";
/// Swapper: rollouts paused because a new instance failed its status checks.
pub const ROLLOUTS_PAUSED: &str = "RolloutsPaused";
/// Scanner: On-Demand instances kept because Reserved Instances pay for them.
pub const RESERVED_COVERED: &str = "ReservedInstancesCovering";
/// Scanner: orphaned Spot instances terminated.
pub const ORPHANS_CLEANED: &str = "OrphansCleaned";
/// Scanner: Spot instances of ours serving in opted-in groups.
pub const SPOT_INSTANCES_MANAGED: &str = "SpotInstancesManaged";
/// Scanner: estimated saving per hour of those instances, in USD.
pub const ESTIMATED_HOURLY_SAVINGS: &str = "EstimatedHourlySavingsUSD";
/// Scanner: actions that failed during a scan.
pub const SCAN_ERRORS: &str = "ScanErrors";
/// SQS functions: records rejected (bad input: they go to the DLQ) and retried.
pub const MESSAGES_REJECTED: &str = "MessagesRejected";
pub const MESSAGES_RETRIED: &str = "MessagesRetried";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Dollars have no CloudWatch unit.
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::None => "None",
        }
    }
}

/// Metrics gathered during one invocation.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<BTreeMap<&'static str, (f64, Unit)>>);

impl Metrics {
    pub fn add(&self, name: &'static str, n: f64) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(name).or_insert((0.0, Unit::Count)).0 += n;
        }
    }

    pub fn incr(&self, name: &'static str) {
        self.add(name, 1.0);
    }

    pub fn set(&self, name: &'static str, value: f64, unit: Unit) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(name, (value, unit));
        }
    }

    /// The EMF document: every metric under `namespace`, dimensioned by function.
    pub fn emf(&self, namespace: &str, function: &str, timestamp_ms: i64) -> Value {
        let metrics = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        let definitions: Vec<Value> =
            metrics.iter().map(|(name, (_, unit))| json!({"Name": name, "Unit": unit.as_str()})).collect();
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": definitions,
                }],
            }),
        );
        doc.insert("Function".into(), json!(function));
        for (name, (value, _)) in metrics {
            doc.insert(name.into(), json!(value));
        }
        Value::Object(doc)
    }

    /// Writes the EMF document as one line on stdout, where Lambda's log capture finds it.
    pub fn publish(&self, namespace: &str, function: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64);
        println!("{}", self.emf(namespace, function, now.unwrap_or_default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_documents_declare_every_metric_they_carry() {
        let m = Metrics::default();
        m.incr(REPLACEMENTS_STARTED);
        m.add(REPLACEMENTS_STARTED, 2.0);
        m.set(ESTIMATED_HOURLY_SAVINGS, 1.25, Unit::None);
        let doc = m.emf("AsgOptimizer", "scanner", 1_700_000_000_000);
        let meta = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(meta["Namespace"], "AsgOptimizer");
        assert_eq!(meta["Dimensions"], json!([["Function"]]));
        assert_eq!(doc["Function"], "scanner");
        let declared: Vec<&str> =
            meta["Metrics"].as_array().unwrap().iter().map(|d| d["Name"].as_str().unwrap()).collect();
        assert_eq!(declared, [ESTIMATED_HOURLY_SAVINGS, REPLACEMENTS_STARTED]);
        assert_eq!(doc[REPLACEMENTS_STARTED], 3.0);
        assert_eq!(doc[ESTIMATED_HOURLY_SAVINGS], 1.25);
        assert_eq!(meta["Metrics"][0]["Unit"], "None");
    }
}
