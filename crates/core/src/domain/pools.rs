//! Spot pools: which instance types may stand in for an On-Demand instance, and which
//! (type, Availability Zone) pools are backed off after a capacity error or an interruption.
//!
//! Backoff state is durable without a datastore: one tag per Availability Zone on the group,
//! [`TAG_BACKOFF_PREFIX`]`<az>` = `m5.large=1800000000 m5a.large=1800000300`, where the number
//! is when the backoff ends. `*` stands for every pool of the group in that zone (a launch that
//! found no capacity in any of the pools it offered). An Auto Scaling tag value holds 256
//! characters: when the entries do not fit, the ones that end soonest are dropped (the pool is
//! then merely tried again early).

use std::collections::BTreeMap;

use crate::domain::model::{rfc3339, Epoch, Tags};
use crate::domain::policy::Policy;

/// On a group: `asg-optimiser:backoff:<az>`, see the module documentation.
pub const TAG_BACKOFF_PREFIX: &str = "asg-optimiser:backoff:";
/// Every pool of the group in the zone.
pub const ALL_POOLS: &str = "*";
/// CreateFleet accepts more, but past the closest twenty types the extra pools only add
/// instances the workload was never sized for.
pub const MAX_OVERRIDES: usize = 20;
const MAX_TAG_VALUE: usize = 256;

/// What DescribeInstanceTypes says about one type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TypeInfo {
    pub name: String,
    pub architectures: Vec<String>,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub spot: bool,
    pub burstable: bool,
    pub instance_storage: bool,
    pub current_generation: bool,
    pub bare_metal: bool,
    /// `nitro` or `xen`; empty when not reported.
    pub hypervisor: String,
    /// `legacy-bios`, `uefi`; empty when not reported.
    pub boot_modes: Vec<String>,
}

impl TypeInfo {
    /// The architecture an AMI that runs on this type is built for.
    pub fn architecture(&self) -> &str {
        if self.architectures.iter().any(|a| a == "arm64") {
            "arm64"
        } else {
            "x86_64"
        }
    }
}

/// The vCPU counts a replacement for `original` may have, for a server-side filter.
pub fn vcpu_range(original: &TypeInfo, factor: f64) -> std::ops::RangeInclusive<i32> {
    original.vcpus..=((original.vcpus as f64 * factor).floor() as i32).max(original.vcpus)
}

/// The types that can run what `original` runs, closest first (the original type itself, then
/// current generation before previous, then fewest vCPUs and least memory), at most
/// [`MAX_OVERRIDES`]:
/// same architecture, Spot supported, at least the vCPUs and memory and at most `factor` times
/// them, burstable only if the original is, instance storage if the original has it (Nitro
/// types expose their NVMe instance store whether or not the launch template maps it, so the
/// workload may depend on it either way), bare metal only if the original is, the original's
/// boot modes, and Xen only for Xen (an AMI built for Xen may lack the NVMe and ENA drivers).
pub fn compatible(original: &TypeInfo, catalog: &[TypeInfo], factor: f64) -> Vec<String> {
    let arch = original.architecture();
    let within = |have: f64, want: f64| have >= want && have <= want * factor;
    let mut fits: Vec<&TypeInfo> = catalog
        .iter()
        .filter(|c| {
            c.architectures.iter().any(|a| a == arch)
                && c.spot
                && within(c.vcpus as f64, original.vcpus as f64)
                && within(c.memory_mib as f64, original.memory_mib as f64)
                && (original.burstable || !c.burstable)
                && (!original.instance_storage || c.instance_storage)
                && (original.bare_metal || !c.bare_metal)
                && (c.boot_modes.is_empty() || original.boot_modes.iter().all(|m| c.boot_modes.contains(m)))
                && (original.hypervisor != "xen" || c.hypervisor == "xen")
        })
        .collect();
    fits.sort_by(|a, b| {
        (a.name != original.name, !a.current_generation, a.vcpus, a.memory_mib, &a.name).cmp(&(
            b.name != original.name,
            !b.current_generation,
            b.vcpus,
            b.memory_mib,
            &b.name,
        ))
    });
    fits.dedup_by(|a, b| a.name == b.name);
    fits.into_iter().take(MAX_OVERRIDES).map(|t| t.name.clone()).collect()
}

/// The Spot types to offer for an instance of `base_type` in `az`: its `compatible` types (see
/// [`compatible`]) that the group's policy allows and that are not backed off there now, or why
/// there is none. The scanner holds an instance back on the same answer the spot-creator would
/// launch on.
pub fn spot_choices(
    base_type: &str,
    compatible: &[String],
    policy: &Policy,
    backoffs: &Backoffs,
    az: &str,
    now: Epoch,
) -> Result<Vec<String>, String> {
    let allowed: Vec<String> = compatible.iter().filter(|t| policy.allows(t)).cloned().collect();
    if allowed.is_empty() {
        return Err(format!("no Spot type compatible with {base_type} is allowed by the group's policy"));
    }
    let usable = backoffs.usable(az, &allowed, now);
    if usable.is_empty() {
        let until = allowed.iter().filter_map(|t| backoffs.until(az, t, now)).min().unwrap_or(now);
        return Err(format!(
            "all {} Spot pools compatible with {base_type} in {az} are backed off until at least {}",
            allowed.len(),
            rfc3339(until)
        ));
    }
    Ok(usable)
}

/// Backed-off pools of one group: (Availability Zone, type or [`ALL_POOLS`]) -> until.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoffs(pub BTreeMap<(String, String), Epoch>);

impl Backoffs {
    /// Reads the group's backoff tags; an unreadable entry is reported and ignored.
    pub fn from_tags(tags: &Tags) -> (Self, Vec<String>) {
        let mut out = BTreeMap::new();
        let mut notes = Vec::new();
        for (key, value) in tags {
            let Some(az) = key.strip_prefix(TAG_BACKOFF_PREFIX) else { continue };
            for entry in value.split_whitespace() {
                match entry.split_once('=').and_then(|(t, until)| Some((t, until.parse::<Epoch>().ok()?))) {
                    Some((t, until)) if !t.is_empty() => {
                        out.insert((az.to_string(), t.to_string()), until);
                    }
                    _ => notes.push(format!("tag {key}: entry {entry:?} is not type=epoch; ignored")),
                }
            }
        }
        (Backoffs(out), notes)
    }

    /// Until when `instance_type` in `az` is backed off, if it is now.
    pub fn until(&self, az: &str, instance_type: &str, now: Epoch) -> Option<Epoch> {
        [instance_type, ALL_POOLS]
            .iter()
            .filter_map(|t| self.0.get(&(az.to_string(), t.to_string())))
            .copied()
            .filter(|&until| until > now)
            .max()
    }

    pub fn active(&self, now: Epoch) -> usize {
        self.0.values().filter(|&&until| until > now).count()
    }

    /// Zones whose tag holds only expired entries: the scanner deletes those tags.
    pub fn expired_zones(&self, now: Epoch) -> Vec<String> {
        let mut zones: BTreeMap<&str, bool> = BTreeMap::new();
        for ((az, _), &until) in &self.0 {
            *zones.entry(az).or_insert(true) &= until <= now;
        }
        zones.into_iter().filter(|(_, expired)| *expired).map(|(az, _)| az.to_string()).collect()
    }

    /// The tag (key, value) for `az` after backing off `types` there until `until`; expired
    /// entries are pruned and, if the value would not fit, the soonest-ending entries dropped.
    pub fn with(&self, az: &str, types: &[String], until: Epoch, now: Epoch) -> (String, String) {
        let mut entries: BTreeMap<&str, Epoch> =
            self.0.iter().filter(|((zone, _), &u)| zone == az && u > now).map(|((_, t), &u)| (t.as_str(), u)).collect();
        for t in types {
            let e = entries.entry(t.as_str()).or_insert(until);
            *e = (*e).max(until);
        }
        let mut by_end: Vec<(&str, Epoch)> = entries.into_iter().collect();
        by_end.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut value = String::new();
        for (t, u) in by_end {
            let entry = format!("{t}={u}");
            if value.len() + entry.len() + 1 > MAX_TAG_VALUE {
                break;
            }
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(&entry);
        }
        (format!("{TAG_BACKOFF_PREFIX}{az}"), value)
    }

    /// The types of `choices` not backed off in `az` now.
    pub fn usable(&self, az: &str, choices: &[String], now: Epoch) -> Vec<String> {
        choices.iter().filter(|t| self.until(az, t, now).is_none()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, vcpus: i32, gib: i64) -> TypeInfo {
        TypeInfo {
            name: name.into(),
            architectures: vec!["x86_64".into()],
            vcpus,
            memory_mib: gib * 1024,
            spot: true,
            current_generation: true,
            hypervisor: "nitro".into(),
            boot_modes: vec!["legacy-bios".into(), "uefi".into()],
            ..Default::default()
        }
    }

    #[test]
    fn compatibility_table() {
        let original = t("m5.large", 2, 8);
        let catalog = vec![
            t("m5.large", 2, 8),
            t("m5a.large", 2, 8),
            t("c5.large", 2, 4),                                 // too little memory
            t("m5.xlarge", 4, 16),                               // exactly 2x: in
            t("m5.2xlarge", 8, 32),                              // over 2x
            TypeInfo { burstable: true, ..t("t3.large", 2, 8) }, // burstable
            TypeInfo { spot: false, ..t("m5n.large", 2, 8) },    // no Spot
            TypeInfo { architectures: vec!["arm64".into()], ..t("m6g.large", 2, 8) }, // other arch
            TypeInfo { current_generation: false, ..t("m4.large", 2, 8) }, // previous gen: last
            TypeInfo { instance_storage: true, ..t("m5d.large", 2, 8) }, // storage is fine
            TypeInfo { bare_metal: true, ..t("m5.metal", 2, 8) }, // bare metal
            TypeInfo { boot_modes: vec!["uefi".into()], ..t("m7i.large", 2, 8) }, // lacks legacy-bios
            t("r5.large", 2, 16),                                // 2x memory: in
        ];
        assert_eq!(
            compatible(&original, &catalog, 2.0),
            ["m5.large", "m5a.large", "m5d.large", "r5.large", "m5.xlarge", "m4.large"]
        );
        // A tighter factor keeps only exact fits.
        assert_eq!(compatible(&original, &catalog, 1.0), ["m5.large", "m5a.large", "m5d.large", "m4.large"]);

        let cases: &[(TypeInfo, &[&str])] = &[
            // Burstable originals accept burstable types.
            (
                TypeInfo { burstable: true, ..t("t3.large", 2, 8) },
                &["t3.large", "m5.large", "m5a.large", "m5d.large", "m4.large"],
            ),
            // Instance storage is kept.
            (TypeInfo { instance_storage: true, ..t("m5d.large", 2, 8) }, &["m5d.large"]),
            // arm64 stays arm64.
            (TypeInfo { architectures: vec!["arm64".into()], ..t("m6g.large", 2, 8) }, &["m6g.large"]),
        ];
        for (original, want) in cases {
            let got = compatible(original, &catalog, 1.0);
            assert_eq!(got, *want, "{}", original.name);
        }
        // Xen stays on Xen.
        let xen = |mut i: TypeInfo| {
            i.hypervisor = "xen".into();
            i
        };
        let catalog = vec![xen(t("m4.large", 2, 8)), t("m5.large", 2, 8)];
        assert_eq!(compatible(&xen(t("m4.large", 2, 8)), &catalog, 2.0), ["m4.large"]);
        // Never more than MAX_OVERRIDES, and the original type is kept whatever its generation.
        let mut many: Vec<TypeInfo> = (0..40).map(|n| t(&format!("x{n:02}.large"), 2, 8)).collect();
        let old = TypeInfo { current_generation: false, ..t("x99.large", 2, 8) };
        many.push(old.clone());
        let chosen = compatible(&old, &many, 2.0);
        assert_eq!((chosen.len(), chosen[0].as_str()), (MAX_OVERRIDES, "x99.large"));
        assert_eq!(vcpu_range(&original, 2.0), 2..=4);
        assert_eq!(vcpu_range(&t("x", 3, 1), 1.5), 3..=4);
    }

    #[test]
    fn spot_choices_table() {
        let compatible: Vec<String> = ["m5.large", "m5a.large", "r5.large"].map(String::from).to_vec();
        let tags: Tags = [(format!("{TAG_BACKOFF_PREFIX}eu-west-1a"), "m5.large=200 r5.large=300".to_string())].into();
        let (backoffs, _) = Backoffs::from_tags(&tags);
        let only = |p: &str| Policy { allowed_types: vec![p.into()], ..Policy::default() };
        // (policy, zone, usable types or a part of why not)
        type Case<'a> = (Policy, &'a str, Result<Vec<&'a str>, &'a str>);
        let cases: Vec<Case> = vec![
            (Policy::default(), "eu-west-1a", Ok(vec!["m5a.large"])),
            (Policy::default(), "eu-west-1b", Ok(vec!["m5.large", "m5a.large", "r5.large"])),
            (only("m5.*"), "eu-west-1a", Err("backed off until at least")),
            (only("c5*"), "eu-west-1a", Err("allowed by the group's policy")),
        ];
        for (policy, az, want) in cases {
            let got = spot_choices("m5.large", &compatible, &policy, &backoffs, az, 100);
            match (&got, &want) {
                (Ok(types), Ok(w)) => assert_eq!(types, w, "{az} {policy:?}"),
                (Err(why), Err(part)) => assert!(why.contains(part), "{why}"),
                _ => panic!("{az} {policy:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn backoff_table() {
        let tags: Tags = [
            ("Name".to_string(), "web".to_string()),
            (format!("{TAG_BACKOFF_PREFIX}eu-west-1a"), "m5.large=200 m5a.large=50 junk c5.large=x".to_string()),
            (format!("{TAG_BACKOFF_PREFIX}eu-west-1b"), "*=300".to_string()),
            (format!("{TAG_BACKOFF_PREFIX}eu-west-1c"), "m5.large=10".to_string()),
        ]
        .into();
        let (b, notes) = Backoffs::from_tags(&tags);
        assert_eq!(notes.len(), 2, "{notes:?}");
        let now = 100;
        let cases = [
            ("eu-west-1a", "m5.large", Some(200)),
            ("eu-west-1a", "m5a.large", None), // expired
            ("eu-west-1a", "r5.large", None),
            ("eu-west-1b", "anything.large", Some(300)),
            ("eu-west-1c", "m5.large", None),
            ("eu-west-1d", "m5.large", None),
        ];
        for (az, ty, want) in cases {
            assert_eq!(b.until(az, ty, now), want, "{az} {ty}");
        }
        assert_eq!(b.active(now), 2);
        assert_eq!(b.expired_zones(now), ["eu-west-1c"]);
        let choices = vec!["m5.large".to_string(), "m5a.large".to_string()];
        assert_eq!(b.usable("eu-west-1a", &choices, now), ["m5a.large"]);
        assert!(b.usable("eu-west-1b", &choices, now).is_empty());

        // Writing prunes expired entries and keeps the later end of a pool backed off twice.
        let (key, value) = b.with("eu-west-1a", &["r5.large".into(), "m5.large".into()], 150, now);
        assert_eq!(key, format!("{TAG_BACKOFF_PREFIX}eu-west-1a"));
        assert_eq!(value, "m5.large=200 r5.large=150");
        // Too many entries for one tag value: the soonest-ending are dropped.
        let types: Vec<String> = (0..40).map(|n| format!("type{n:02}.xlarge")).collect();
        let (_, value) = Backoffs::default().with("eu-west-1a", &types, 1_800_000_000, now);
        assert!(value.len() <= MAX_TAG_VALUE && value.split(' ').count() > 5, "{value}");
        let (b2, notes) = Backoffs::from_tags(&[(key, value)].into());
        assert!(notes.is_empty());
        assert!(b2.active(now) > 5);
    }
}
