//! The instance types and prices of the simulated Region: a small catalog with the shapes the
//! compatibility rules care about (sizes, burstable, instance storage, architecture).

use std::collections::BTreeMap;

use asg_core::domain::pools::TypeInfo;

/// (name, vCPUs, GiB, burstable, instance storage, arm64, On-Demand USD/hour)
const TYPES: &[(&str, i32, i64, bool, bool, bool, f64)] = &[
    ("m5.large", 2, 8, false, false, false, 0.096),
    ("m5a.large", 2, 8, false, false, false, 0.086),
    ("m5d.large", 2, 8, false, true, false, 0.113),
    ("m6i.large", 2, 8, false, false, false, 0.096),
    ("r5.large", 2, 16, false, false, false, 0.126),
    ("c5.large", 2, 4, false, false, false, 0.085),
    ("m5.xlarge", 4, 16, false, false, false, 0.192),
    ("m5a.xlarge", 4, 16, false, false, false, 0.172),
    ("c5.xlarge", 4, 8, false, false, false, 0.17),
    ("c5a.xlarge", 4, 8, false, false, false, 0.154),
    ("c6i.xlarge", 4, 8, false, false, false, 0.17),
    ("t3.large", 2, 8, true, false, false, 0.0832),
    ("m6g.large", 2, 8, false, false, true, 0.077),
    ("m7g.large", 2, 8, false, false, true, 0.0816),
];

pub fn types() -> Vec<TypeInfo> {
    TYPES
        .iter()
        .map(|&(name, vcpus, gib, burstable, storage, arm, _)| TypeInfo {
            name: name.into(),
            architectures: vec![if arm { "arm64" } else { "x86_64" }.into()],
            vcpus,
            memory_mib: gib * 1024,
            spot: true,
            burstable,
            instance_storage: storage,
            current_generation: true,
            bare_metal: false,
            hypervisor: "nitro".into(),
            boot_modes: vec!["legacy-bios".into(), "uefi".into()],
        })
        .collect()
}

pub fn on_demand_prices() -> BTreeMap<String, f64> {
    TYPES.iter().map(|t| (t.0.to_string(), t.6)).collect()
}

/// A Spot price a third of On-Demand, a little different per zone.
pub fn spot_price(instance_type: &str, zone: &str) -> Option<f64> {
    let od = TYPES.iter().find(|t| t.0 == instance_type)?.6;
    let skew = 1.0 + (zone.bytes().last().unwrap_or(b'a') - b'a') as f64 * 0.05;
    Some(od * 0.33 * skew)
}
